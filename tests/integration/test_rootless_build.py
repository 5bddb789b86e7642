"""A whole rootless `pybuild build` and `pybuild run`: an unprivileged user (nobody, through
setpriv) builds FROM, WORKDIR, COPY, ADD of a local tar and RUN in a user namespace pybuild
makes for itself, and gets the very image a build as root gives; the store stays the user's
on disk; an id the namespace does not map fails saying which and what to do (issue 4)."""
from __future__ import annotations

import fcntl
import io
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import runbuild, test_run_rootless
from tests.integration.runbuild import OciImage
from tests.integration.test_run_rootless import NOBODY, SITE

# The system Python with pybuild's dependencies where nobody can read them (a fixture).
python_for_nobody = test_run_rootless.python_for_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

EPOCH = "1700000000"
DOCKERFILE = """\
FROM bb
WORKDIR /app/sub
COPY src/hello.txt ./
COPY src/d /app/d
ADD files.tar /opt/
RUN echo built > /app/run.txt && cat /opt/in-tar/a.txt >> /app/run.txt && \\
    ln -s run.txt /app/link && mkdir -p /var/x && rm -rf /root
ENV GREETING=hi
CMD ["cat", "/app/run.txt"]
"""


class Setup:
    """A busybox base as an OCI layout and a build context, both readable by nobody, and a
    working folder nobody owns."""

    def __init__(self, top: Path) -> None:
        self.top = top
        tree = runbuild.busybox_tree(top / "tree")
        (tree / "home/app/.profile").write_text("export PS1=app\n")
        os.chown(tree / "home/app/.profile", 1000, 1000)
        runbuild.write_layout(top / "layout", runbuild.tar_tree(tree, top / "layer.tar"))
        self.ctx = top / "ctx"
        (self.ctx / "src" / "d").mkdir(parents=True)
        (self.ctx / "src" / "hello.txt").write_text("hello\n")
        (self.ctx / "src" / "d" / "deep").write_text("deep\n")
        (self.ctx / "Dockerfile").write_text(DOCKERFILE)
        with tarfile.open(self.ctx / "files.tar", "w") as tar:
            info = tarfile.TarInfo("in-tar/a.txt")
            data = b"from the tar\n"
            info.size, info.mtime, info.mode = len(data), 1600000000, 0o644
            tar.addfile(info, io.BytesIO(data))
        subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
        self.work = top / "nobody"
        self.work.mkdir()
        os.chown(self.work, 65534, 65534)

    def as_nobody(self, python: str, *args: str, ctx: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.as_user(NOBODY, self.work, python, *args, ctx=ctx, env=env)

    def as_user(self, user: list[str], work: Path, python: str, *args: str,
                ctx: Path | None = None, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        repo = Path(__file__).resolve().parents[2]
        argv = [*user, python, "-m", "builder", *args]
        if args[0] == "build":
            argv += ["--root", str(work / "store"), "--progress", "plain", "--build-context",
                     f"bb=oci-layout://{self.top / 'layout'}:latest", "--source-date-epoch", EPOCH,
                     str(ctx or self.ctx)]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, cwd=work, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(work),
                 "TMPDIR": str(work), "PYTHONPATH": f"{SITE}:{repo}", **(env or {})})


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    top = Path(tempfile.mkdtemp(prefix="pb-rootless-"))  # pytest's temp dirs are 0700 root
    os.chmod(top, 0o755)
    try:
        yield Setup(top)
    finally:
        shutil.rmtree(top)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line for line in f if str(path) in line]


def test_rootless_build_gives_the_root_build_image(python_for_nobody: str, setup: Setup) -> None:
    out = setup.work / "out.tar"
    done = setup.as_nobody(python_for_nobody, "build", "-o", f"type=oci,dest={out}")
    assert done.returncode == 0, done.stderr
    # the base's /home/app belongs to 1000, which one mapped id cannot hold: said, not fatal
    assert "'./home/app' is owned by 1000:1000, which the rootless user namespace does not " \
           "map" in done.stderr
    runbuild.pybuild("build", "--root", str(setup.top / "root-store"), "--build-context",
                     f"bb=oci-layout://{setup.top / 'layout'}:latest", "--source-date-epoch", EPOCH,
                     "-o", f"type=oci,dest={setup.top / 'root.tar'}", str(setup.ctx))
    rootless, as_root = OciImage(out), OciImage(setup.top / "root.tar")
    assert rootless.config == as_root.config  # diff_ids, history, env, cmd
    assert rootless.layer_digests == as_root.layer_digests
    assert len(rootless.layer_digests) == 6
    run_layer = rootless.layer(5)
    info, data = run_layer["app/run.txt"]
    assert (info.uid, info.gid, data) == (0, 0, b"built\nfrom the tar\n")
    assert rootless.layer(4)["opt/in-tar/a.txt"][1] == b"from the tar\n"
    assert rootless.layer(2)["app/sub/hello.txt"][0].uid == 0
    # what pybuild left on disk is nobody's, and nothing stays mounted or half-made
    strangers = [p for p in runbuild.store_files(setup.work / "store") if p.lstat().st_uid != 65534]
    assert strangers == []
    assert list((setup.work / "store" / "tmp").iterdir()) == []
    assert _mounts_under(setup.top) == []


def test_rootless_copy_snapshotter_gives_the_overlay_image(python_for_nobody: str,
                                                          setup: Setup) -> None:
    """In a user namespace, steps on copies of their root (the fallback where overlay is
    refused) give the image the overlay gives, and leave nothing behind either."""
    images = {}
    for snapshotter in ("overlay", "copy"):
        out = setup.work / f"{snapshotter}.tar"
        done = setup.as_nobody(python_for_nobody, "build", "--no-cache", "-o",
                               f"type=oci,dest={out}",
                               env={"PYBUILD_SNAPSHOTTER": snapshotter})
        assert done.returncode == 0, done.stderr
        images[snapshotter] = OciImage(out)
    assert images["copy"].config == images["overlay"].config
    assert images["copy"].layer_digests == images["overlay"].layer_digests
    assert images["copy"].layer(5)["app/run.txt"][1] == b"built\nfrom the tar\n"
    assert list((setup.work / "store" / "tmp").iterdir()) == []
    assert _mounts_under(setup.top) == []


def test_rootless_pybuild_run(python_for_nobody: str, setup: Setup) -> None:
    built = setup.as_nobody(python_for_nobody, "build", "-t", "rootless:latest")
    assert built.returncode == 0, built.stderr
    store = str(setup.work / "store")
    ran = setup.as_nobody(python_for_nobody, "run", "--root", store, "rootless:latest")
    assert (ran.returncode, ran.stdout) == (0, "built\nfrom the tar\n"), ran.stderr
    ran = setup.as_nobody(python_for_nobody, "run", "--root", store, "rootless:latest",
                          "sh", "-c", "id -u; pwd; echo $GREETING; touch /new; ls /app")
    assert (ran.returncode, ran.stdout) == (0, "0\n/app/sub\nhi\nd\nlink\nrun.txt\nsub\n"), \
        ran.stderr
    assert _mounts_under(setup.top) == []


def test_rootless_second_uid_fails_clearly(python_for_nobody: str, setup: Setup) -> None:
    ctx = setup.top / "ctx-uid"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb\nWORKDIR /w\nRUN --mount=type=cache,target=/c,uid=1000 "
                                    "true\n")
    os.chmod(ctx, 0o755)
    os.chmod(ctx / "Dockerfile", 0o644)
    failed = setup.as_nobody(python_for_nobody, "build", ctx=ctx)
    assert failed.returncode == 1
    assert "Dockerfile:3: the mount's uid=1000,gid=0 needs uid 1000, which the rootless user " \
           "namespace does not map (it has uids 0)" in failed.stderr
    assert "/etc/subuid" in failed.stderr and "Traceback" not in failed.stderr
    assert _mounts_under(setup.top) == []


@pytest.fixture
def daemon_subids() -> Iterator[tuple[int, int]]:
    """User daemon (uid 1) given subordinate ids in /etc/subuid and /etc/subgid for the test
    (restored after; nobody, which the other rootless tests use, keeps none)."""
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.skip("newuidmap/newgidmap (uidmap) are not installed")
    try:
        daemon = pwd.getpwnam("daemon")
    except KeyError:
        pytest.skip("no user daemon")
    files = [Path("/etc/subuid"), Path("/etc/subgid")]
    with open("/run/lock/pybuild-tests-subids.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = {path: path.read_text() if path.exists() else None for path in files}
        try:
            for path, text in saved.items():
                path.write_text((text or "") + "daemon:300000:65536\n")
            yield daemon.pw_uid, daemon.pw_gid
        finally:
            for path, text in saved.items():
                if text is None:
                    path.unlink()
                else:
                    path.write_text(text)


def test_rootless_build_with_subordinate_ids(python_for_nobody: str, setup: Setup,
                                             daemon_subids: tuple[int, int]) -> None:
    """With a subordinate range (newuidmap/newgidmap), other users and groups work too and
    the image still equals the root build's; their files land on disk as subordinate ids."""
    uid, gid = daemon_subids
    ctx = setup.top / "ctx-subids"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(
        "FROM bb\nCOPY --chown=1000:1001 hello.txt /x\nUSER app\n"
        "RUN id > /home/app/id && ls -ln /x >> /home/app/id\n")
    subprocess.run(["chmod", "-R", "a+rX", str(ctx)], check=True)
    work = setup.top / "daemon"
    work.mkdir()
    os.chown(work, uid, gid)
    user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    done = setup.as_user(user, work, python_for_nobody, "build", "-o",
                         f"type=oci,dest={work / 'out.tar'}", ctx=ctx)
    assert done.returncode == 0, done.stderr
    runbuild.pybuild("build", "--root", str(setup.top / "root-store"), "--build-context",
                     f"bb=oci-layout://{setup.top / 'layout'}:latest", "--source-date-epoch", EPOCH,
                     "-o", f"type=oci,dest={setup.top / 'root-subids.tar'}", str(ctx))
    rootless, as_root = OciImage(work / "out.tar"), OciImage(setup.top / "root-subids.tar")
    assert rootless.config == as_root.config
    assert rootless.layer_digests == as_root.layer_digests
    info, data = rootless.layer(2)["home/app/id"]
    assert (info.uid, info.gid) == (1000, 1000)
    assert data is not None and data.startswith(
        b"uid=1000(app) gid=1000(app) groups=1000(app),1001(extra)\n-rw-r--r--    1 1000     1001")
    owners = {p.lstat().st_uid for p in runbuild.store_files(work / "store")}
    assert owners == {uid, 300000 + 999}  # app (1000) is the range's 1000th id
    assert _mounts_under(setup.top) == []
