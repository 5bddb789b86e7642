"""Rootless `pybuild build`: an unprivileged user (nobody, through setpriv) builds RUN steps
in a user namespace; a Dockerfile needing one uid gives the same filesystem as a build as
root; a step needing another uid fails with a clear message (issue 4)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import OciImage
from tests.integration.test_run_layers import _apply

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SITE = Path("/var/cache/pybuild-tests/site-py311")

DOCKERFILE = (
    "FROM bb\n"
    "RUN echo hi > /tmp/x && mkdir -p /opt/a/b && ln -s x /opt/l && ln /tmp/x /opt/h && "
    "rm -rf /root /etc/group && chmod 4750 /opt/a && mkfifo /opt/f && id > /id\n"
    "RUN rm -rf /opt/a && mkdir /opt/a && echo again > /opt/a/n\n")


@pytest.fixture(scope="module")
def python_for_nobody() -> str:
    """The system Python 3.11 with pybuild's dependencies in a folder nobody may read
    (pybuild's own interpreter lives under /root), made once per machine."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    python = "/usr/bin/python3"
    want = f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"
    probe = subprocess.run([*NOBODY, python, "-c", want], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"{python} is not the Python {sys.version_info[:2]} pybuild runs on")
    if not SITE.is_dir():
        part = SITE.with_name(SITE.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(part),
                               "lark", "zstandard", "click", "requests", "cryptography"],
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot install pybuild's dependencies for nobody: {done.stderr[-300:]}")
        subprocess.run(["chmod", "-R", "a+rX", str(part)], check=True)
        os.rename(part, SITE)
    userns = subprocess.run([*NOBODY, "unshare", "--user", "--map-root-user", "true"],
                            capture_output=True, check=False)
    if userns.returncode != 0:
        pytest.skip("the kernel refuses unprivileged user namespaces")
    return python


def _build_as_nobody(python: str, base: Path, layout: Path, dockerfile: str,
                     ) -> subprocess.CompletedProcess[str]:
    ctx = base / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [*NOBODY, python, "-m", "builder", "build", "--root", str(base / "store"), "--progress",
         "plain", "--build-context", f"bb=oci-layout://{layout}:latest", "-o",
         f"type=oci,dest={base / 'out.tar'}", str(ctx)],
        capture_output=True, text=True, timeout=120, cwd=base, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base), "TMPDIR": str(base),
             "PYTHONPATH": f"{SITE}:{repo}"})


def _tree(img: OciImage) -> dict[str, tuple]:
    import io

    tree: dict[str, tuple] = {}
    for n in range(len(img.layer_digests)):
        _apply(tree, io.BytesIO(img.layer_bytes(n)))  # type: ignore[arg-type]
    return tree


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder nobody can reach (pytest's own temp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="pb-rootless-build-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_rootless_build_matches_root_build(python_for_nobody: str, base: Path) -> None:
    tree = runbuild.busybox_tree(base / "tree")
    layout = base / "layout"
    runbuild.write_layout(layout, runbuild.tar_tree(tree, base / "layer.tar"))
    subprocess.run(["chmod", "-R", "a+rX", str(layout)], check=True)
    work = base / "nobody"
    work.mkdir()
    os.chown(work, 65534, 65534)
    done = _build_as_nobody(python_for_nobody, work, layout, DOCKERFILE)
    assert done.returncode == 0, done.stderr
    rootless = OciImage(work / "out.tar")
    # the same Dockerfile built as root
    root_ctx = base / "root-ctx"
    root_ctx.mkdir()
    (root_ctx / "Dockerfile").write_text(DOCKERFILE)
    runbuild.pybuild("build", "--root", str(base / "root-store"), "--build-context",
                     f"bb=oci-layout://{layout}:latest", "-o", f"type=oci,dest={base / 'root.tar'}",
                     str(root_ctx))
    as_root = OciImage(base / "root.tar")
    ours, theirs = _tree(rootless), _tree(as_root)
    # `id` differs in its supplementary groups only: one mapped id allows no setgroups
    assert rootless.layer(1)["id"][1].startswith(b"uid=0(root) gid=0")
    del ours["id"], theirs["id"]
    assert ours == theirs
    assert ours["opt/a"][1:4] == (0o755, 0, 0) and ours["opt/a/n"][0] == "file"
    assert ours["tmp/x"][2:4] == (0, 0)  # recorded as root, not as nobody's host uid
    assert "root" not in ours and "etc/group" not in ours
    # a step that needs a second uid says what failed and what to do
    failed = _build_as_nobody(python_for_nobody, work, layout,
                              "FROM bb\nUSER app\nRUN id\n")
    assert failed.returncode == 1
    assert "Dockerfile:3: user 'app' (uid 1000, gid 1000) is not mapped in the rootless user " \
           "namespace" in failed.stderr
    assert "/etc/subuid" in failed.stderr and "Traceback" not in failed.stderr
    assert list((work / "store" / "tmp").iterdir()) == []
