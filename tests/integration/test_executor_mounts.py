"""RUN --mount mechanics and overlays: binds, tmpfs, mount points leaving no trace, layers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import ExecError
from builder.executor import Mount, RootFS, mounted_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("from the host\n")
    return src


# The runtime's mount points, made because busybox_rootfs has none: they stay in the layer
# as with BuildKit (test_executor_basic), and are not what these tests look at.
_RUNTIME = {"dev", "proc", "sys"}


def _tree(upper: Path) -> list[str]:
    return sorted(str(p.relative_to(upper)) for p in upper.rglob("*")
                  if str(p.relative_to(upper)) not in _RUNTIME)


def test_readonly_bind(busybox_rootfs: Path, source: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "cat /mnt/src/file; touch /mnt/src/new 2>/dev/null || "
                                    "echo refused",
                    mounts=(Mount("bind", "/mnt/src", source=source, readonly=True),))
    assert result.output == "from the host\nrefused\n"
    assert sorted(os.listdir(source)) == ["file"]
    assert _tree(result.upper) == []  # /mnt was made for the mount and is gone again


def test_readwrite_bind_writes_through(busybox_rootfs: Path, source: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "echo written > /src/new; rm /src/file",
                    mounts=(Mount("cache", "/src", source=source),))
    assert result.code == 0
    assert os.listdir(source) == ["new"]
    assert (source / "new").read_text() == "written\n"
    assert _tree(result.upper) == []


def test_file_bind_like_a_secret(busybox_rootfs: Path, tmp_path: Path, run_on) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    result = run_on(busybox_rootfs, "cat /run/secrets/token; echo; ls -l /run/secrets | wc -l;"
                                    " echo x > /run/secrets/token || echo refused",
                    mounts=(Mount("secret", "/run/secrets/token", source=secret, readonly=True),))
    assert result.output.splitlines()[0] == "s3cr3t"
    assert result.output.splitlines()[-1] == "refused"
    assert secret.read_text() == "s3cr3t"
    assert _tree(result.upper) == []


def test_tmpfs_with_size(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "grep ' /scratch ' /proc/mounts; "
                                    "dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null"
                                    " || echo full",
                    mounts=(Mount("tmpfs", "/scratch", options=("size=1m", "noexec")),))
    mount_line, verdict = result.output.splitlines()
    assert mount_line.startswith("tmpfs /scratch tmpfs rw,noexec,")
    assert "size=1024k" in mount_line
    assert verdict == "full"
    assert _tree(result.upper) == []  # nothing written on a tmpfs reaches the layer


def test_mount_point_parents_with_content_stay(busybox_rootfs: Path, source: Path,
                                               run_on) -> None:
    result = run_on(busybox_rootfs, "echo data > /opt/app/out; ls /opt/app",
                    mounts=(Mount("bind", "/opt/app/m1", source=source),
                            Mount("tmpfs", "/opt/app/m2"),
                            Mount("bind", "/tmp/existing", source=source)))
    assert result.output.split() == ["m1", "m2", "out"]
    # The step's file stays with its directories; the mount points and /tmp do not.
    assert _tree(result.upper) == ["opt", "opt/app", "opt/app/out"]


def test_missing_bind_source_is_a_clear_error(busybox_rootfs: Path, tmp_path: Path,
                                              run_on) -> None:
    with pytest.raises(ExecError, match="source of the bind mount on /x does not exist"):
        run_on(busybox_rootfs, "true", mounts=(Mount("bind", "/x", source=tmp_path / "nope"),))


def test_many_long_lower_layers(tmp_path: Path, busybox_rootfs: Path, run_on) -> None:
    layers = []
    for i in range(150):
        layer = tmp_path / ("a-fairly-long-layer-directory-name-" + "z" * 40 + f"-{i:03d}")
        (layer / "layers").mkdir(parents=True)
        (layer / "layers" / f"{i:03d}").write_text(str(i))
        (layer / "layers" / "top").write_text(str(i))
        layers.append(layer)
    assert len(":".join(map(str, layers))) > 4096
    result = run_on([*reversed(layers), busybox_rootfs],
                    "ls /layers | wc -l; cat /layers/top; echo; cat /layers/000")
    assert result.output.split() == ["151", "149", "0"]


def test_zero_lowers(tmp_path: Path) -> None:
    upper, work = tmp_path / "u", tmp_path / "w"
    upper.mkdir()
    work.mkdir()
    with mounted_rootfs(RootFS([], upper, work)) as merged:
        assert os.listdir(merged) == []
        (merged / "hello").write_text("hi")
    assert (upper / "hello").read_text() == "hi"


def test_mounted_rootfs_for_copy_steps(busybox_rootfs: Path, tmp_path: Path) -> None:
    upper, work = tmp_path / "u", tmp_path / "w"
    upper.mkdir()
    work.mkdir()
    with mounted_rootfs(RootFS([busybox_rootfs], upper, work)) as merged:
        assert (merged / "bin" / "busybox").is_file()
        (merged / "etc" / "copied").write_text("x")
        os.unlink(merged / "etc" / "group")
        assert str(merged) in Path("/proc/self/mounts").read_text()
    assert str(merged) not in Path("/proc/self/mounts").read_text()
    assert not merged.parent.exists()
    assert (upper / "etc" / "copied").read_text() == "x"
    st = os.lstat(upper / "etc" / "group")
    assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0)  # a whiteout
    assert (busybox_rootfs / "etc" / "group").exists()


def test_mounted_rootfs_read_only_view(busybox_rootfs: Path) -> None:
    with mounted_rootfs(RootFS([busybox_rootfs], None, None)) as merged:
        assert (merged / "etc" / "passwd").read_text().startswith("root:")
        with pytest.raises(OSError):
            (merged / "new").write_text("x")
