"""The executor's pure logic: users, paths inside a root, overlay options, stubs, the fake."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from builder.errors import ExecError
from builder.executor import Mount, RootFS, RunSpec, StepInterrupted, resolve_user
from builder.executor.fake import FakeExecutor, Script
from builder.executor.rootfs import _volatile_supported, make_stub, overlay_options, remove_stubs, secure_join
from builder.executor.spec import capability_mask

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1000::/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:root
wheel:x:10:root,app
app:x:1000:
extra:x:1001:app,other
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(("spec", "expected"), [
    ("", (0, 0, (0, 10))),
    ("root", (0, 0, (0, 10))),
    ("app", (1000, 1000, (10, 1001))),
    ("1000", (1000, 1000, (10, 1001))),
    ("app:extra", (1000, 1001, ())),
    ("app:1001", (1000, 1001, ())),
    ("1000:1000", (1000, 1000, ())),
    ("app:4000", (1000, 4000, ())),
    ("4242", (4242, 0, ())),
    ("4242:55", (4242, 55, ())),
    ("nobody", (65534, 65534, ())),
])
def test_resolve_user(image: Path, spec: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(image, spec) == expected


def test_unknown_user_and_group(image: Path) -> None:
    with pytest.raises(ExecError) as e:
        resolve_user(image, "ghost")
    assert str(e.value) == "unable to find user ghost: no matching entries in passwd file"
    with pytest.raises(ExecError, match="unable to find group nogroup: no matching entries in "
                                        "group file"):
        resolve_user(image, "app:nogroup")


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "") == (0, 0, ())
    assert resolve_user(tmp_path, "1000:1000") == (1000, 1000, ())
    with pytest.raises(ExecError, match="unable to find user app"):
        resolve_user(tmp_path, "app")
    # BuildKit's ParseUIDGID: with both parts given, "root" is 0 and no file is read
    for spec in ("root:root", "0:root", "root:0"):
        assert resolve_user(tmp_path, spec) == (0, 0, ())
    assert resolve_user(tmp_path, "root:5") == (0, 5, ())
    with pytest.raises(ExecError, match="unable to find user root"):
        resolve_user(tmp_path, "root")
    with pytest.raises(ExecError, match="unable to find user root"):
        resolve_user(tmp_path, "root:wheel")


def test_resolve_user_follows_symlinks_inside_the_root(tmp_path: Path, image: Path) -> None:
    root = tmp_path / "r"
    (root / "real").mkdir(parents=True)
    (root / "real" / "passwd").write_text("bob:x:7:8::/:/bin/sh\n")
    (root / "etc").symlink_to("/real")  # absolute: must resolve inside root, not on the host
    assert resolve_user(root, "bob") == (7, 8, ())


def test_secure_join_never_leaves_the_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "up").symlink_to("../../../..")
    (tmp_path / "a" / "abs").symlink_to("/etc/passwd")
    (tmp_path / "loop").symlink_to("loop")
    assert secure_join(tmp_path, "/a/up/x") == tmp_path / "x"
    assert secure_join(tmp_path, "a/abs") == tmp_path / "etc" / "passwd"
    assert secure_join(tmp_path, "../../a/./b/..") == tmp_path / "a"
    with pytest.raises(OSError, match="too many levels"):
        secure_join(tmp_path, "loop/x")


def test_overlay_options_stay_short_with_many_long_layers(tmp_path: Path) -> None:
    lowers = [tmp_path / ("layer-with-a-rather-long-name-" + "x" * 60 + f"-{i}")
              for i in range(120)]
    links = tmp_path / "links"
    links.mkdir()
    rootfs = RootFS(lowers, tmp_path / "upper", tmp_path / "work")
    options = overlay_options(rootfs, links, relative=True)
    assert len(options) < 4096
    # a step's overlay skips the sync at unmount where the kernel knows how (5.10+)
    volatile = ",volatile" if _volatile_supported() else ""
    assert options.startswith("lowerdir=0:1:2:") and options.endswith(",upperdir=u,workdir=w" + volatile)
    assert os.readlink(links / "119") == str(lowers[119])
    absolute = tmp_path / "abs"
    absolute.mkdir()
    opts = overlay_options(RootFS([], tmp_path / "u", tmp_path / "w"), absolute, userxattr=True)
    assert opts == (f"lowerdir={absolute}/0,upperdir={absolute}/u,workdir={absolute}/w{volatile},"
                    "userxattr")
    assert os.readlink(absolute / "0") == str(absolute / "e")


def test_too_many_layers_is_a_clear_error(tmp_path: Path) -> None:
    rootfs = RootFS([tmp_path / f"l{i}" for i in range(1500)], tmp_path / "u", tmp_path / "w")
    with pytest.raises(ExecError, match="too many layers"):
        overlay_options(rootfs, tmp_path, relative=True)


def test_stubs_are_removed_and_parent_times_restored(tmp_path: Path) -> None:
    # Stand-in for an overlay: the "merged" root and the upper dir are the same directory.
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.utime(root / "etc", ns=(1_000_000_000, 2_000_000_000))
    real, made = make_stub(root, None, "/etc/resolv.conf", is_dir=False)
    assert real == root / "etc" / "resolv.conf" and real.is_file()
    _, more = make_stub(root, None, "/run/secrets/token", is_dir=False)
    _, deep = make_stub(root, None, "/cache/a/b", is_dir=True)
    assert [s.path for s in made + more + deep] == [
        "etc/resolv.conf", "run", "run/secrets", "run/secrets/token", "cache", "cache/a",
        "cache/a/b"]
    # The step wrote next to one stub: that directory is content now and stays.
    (root / "cache" / "a" / "kept").write_text("data")
    remove_stubs(root, made + more + deep)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "cache", "cache/a", "cache/a/kept", "etc"]
    assert (root / "etc").stat().st_mtime_ns == 2_000_000_000


def test_a_stub_with_content_is_kept(tmp_path: Path) -> None:
    _, made = make_stub(tmp_path, None, "/etc/hosts", is_dir=False)
    (tmp_path / "etc" / "hosts").write_text("written by the step\n")
    remove_stubs(tmp_path, made)
    assert (tmp_path / "etc" / "hosts").read_text() == "written by the step\n"


def test_spec_validation() -> None:
    with pytest.raises(ExecError, match="unsupported mount type"):
        Mount("nfs", "/x")
    with pytest.raises(ExecError, match="has no source"):
        Mount("bind", "/x")
    with pytest.raises(ExecError, match="absolute"):
        Mount("tmpfs", "x")
    with pytest.raises(ExecError, match="unknown network mode"):
        RunSpec(argv=("true",), network="bridge")  # type: ignore[arg-type]
    assert capability_mask() == 0xA80425FB


def test_step_interrupted_exit_codes() -> None:
    assert StepInterrupted(signal.SIGINT).exit_code == 130
    assert StepInterrupted(signal.SIGTERM).exit_code == 143
    assert isinstance(StepInterrupted(signal.SIGTERM), ExecError)
    assert str(StepInterrupted(signal.SIGTERM)) == "build interrupted by SIGTERM"


def test_fake_executor_writes_changes_like_overlay(tmp_path: Path) -> None:
    upper, work = tmp_path / "u", tmp_path / "w"
    upper.mkdir()
    fake = FakeExecutor([
        Script(output=b"hello\n", files={"/etc/new": b"x", "/usr/old": None},
               dirs=("/var/empty",), opaque=("/opt",)),
        Script(exit_code=2),
        Script(interrupt=signal.SIGINT),
    ])
    seen: list[bytes] = []
    rootfs = RootFS([tmp_path], upper, work)
    assert fake.run_step(RunSpec(argv=("a",)), rootfs, output=seen.append) == 0
    assert seen == [b"hello\n"]
    assert (upper / "etc" / "new").read_bytes() == b"x"
    assert (upper / "var" / "empty").is_dir()
    wh = upper / "usr" / "old"
    if os.path.lexists(wh):
        st = os.lstat(wh)
        assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0)
    else:
        assert (upper / "usr" / ".wh.old").is_file()
    assert os.path.exists(upper / "opt" / ".wh..wh..opq") or \
        os.getxattr(upper / "opt", "trusted.overlay.opaque") == b"y"
    assert fake.run_step(RunSpec(argv=("b",)), rootfs, output=seen.append) == 2
    with pytest.raises(StepInterrupted):
        fake.run_step(RunSpec(argv=("c",)), rootfs, output=seen.append)
    assert [c.spec.argv for c in fake.calls] == [("a",), ("b",), ("c",)]
    with pytest.raises(AssertionError, match="unexpected step"):
        fake.run_step(RunSpec(argv=("d",)), rootfs, output=seen.append)


def test_fake_executor_by_argv() -> None:
    fake = FakeExecutor({("sh", "-c", "exit 1"): Script(exit_code=1, error="boom")})
    with pytest.raises(ExecError, match="boom"):
        fake.run_step(RunSpec(argv=("sh", "-c", "exit 1")), RootFS([], None, None),
                      output=lambda b: None)
