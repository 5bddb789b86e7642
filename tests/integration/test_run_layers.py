"""The layer a RUN step makes, through `pybuild build` (issue 4, "Snapshots"): whiteouts,
opaque dirs, file<->dir replacement, hard links, xattrs, fifos and devices, set-uid bits,
parents as in the merged view, empty steps; a package-manager-like workload on Debian; and
the resulting filesystems compared with what docker's BuildKit makes of the same Dockerfiles.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import dockerd as dockerd_fixture
from tests.fixtures.dockerd import Dockerd
from tests.integration import runbuild
from tests.integration.runbuild import DEBIAN_TARBALL, OciImage, pybuild

# fixtures
dockerd = dockerd_fixture.dockerd
debian_layout = runbuild.debian_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")

# security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2), as `setcap cap_net_raw+ep` writes it.
CAP_NET_RAW = "0100000200200000000000000000000000000000"

CHANGES = (
    "FROM base\n"
    "RUN mkdir -p /d/keep /d/gone /opq/sub /deep/er/still /d2f && echo a > /d/keep/a && "
    "echo b > /d/gone/b && echo x > /opq/x && echo y > /opq/sub/y && echo f > /f2d && "
    "echo in > /d2f/in && echo h > /h1 && echo del > /del && echo s > /deep/er/still/s && "
    "chmod 0711 /deep && chown 1000:1002 /deep/er\n"
    "RUN rm -rf /d/gone /del && rm -rf /opq && mkdir /opq && echo new > /opq/n && "
    "rm /f2d && mkdir /f2d && echo c > /f2d/c && rm -rf /d2f && echo file > /d2f && "
    "ln /h1 /h2 && echo pair > /p1 && ln /p1 /p2 && mkfifo /fifo && mknod /null2 c 1 3 && "
    "cp /bin/true /suid && chmod 4755 /suid && chmod 2750 /d/keep && "
    "echo t > /deep/er/still/t && ln -s ../d/keep/a /sym && echo cap > /capped && "
    "python3 -c \"import os; os.setxattr('/capped', 'security.capability', "
    f"bytes.fromhex('{CAP_NET_RAW}')); os.setxattr('/capped', 'user.note', b'kept')\"\n"
    "RUN true\n")

_GENERATE = """\
import os
for i in range(2000):
    d = f'/usr/share/pkg/{i % 40}'
    os.makedirs(d, exist_ok=True)
    with open(f'{d}/file{i}', 'w') as f: f.write(f'content {i}\\n')
    if i % 100 == 0: os.link(f'{d}/file{i}', f'{d}/link{i}')
    if i % 50 == 0: os.symlink(f'file{i}', f'{d}/sym{i}')
for root, dirs, files in os.walk('/usr/share/zoneinfo'):
    for name in files:
        p = os.path.join(root, name)
        if not os.path.islink(p):
            data = open(p, 'rb').read()
            os.unlink(p)
            open(p, 'wb').write(data + b'.')
os.chmod('/usr/share/pkg/3', 0o700)
"""

# create, replace and delete thousands of files, as an install/upgrade/purge would (exec
# form with a JSON string: docker 20.10's built-in frontend has no heredocs)
PACKAGES = (
    "FROM base\n"
    f"RUN {json.dumps(['python3', '-c', _GENERATE])}\n"
    "RUN rm -rf /usr/share/doc /usr/share/locale /usr/share/man/man1 && "
    "rm -rf /var/lib/dpkg/info && mkdir /var/lib/dpkg/info && echo new > /var/lib/dpkg/info/pkg.list\n"
    "RUN rm -rf /usr/share/pkg/1* && echo again > /usr/share/pkg/0/file0\n")


@pytest.fixture(scope="module")
def deb_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the 230 MB Debian base is unpacked once."""
    return tmp_path_factory.mktemp("debstore")


def _build(tmp: Path, store: Path, layout: Path, dockerfile: str, name: str) -> OciImage:
    ctx = tmp / f"ctx-{name}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    out = tmp / f"{name}.tar"
    pybuild("build", "--root", str(store), "--progress", "plain", "--build-context",
            f"base=oci-layout://{layout}:latest", "-o", f"type=oci,dest={out}", str(ctx))
    return OciImage(out)


def test_run_layer_entries(deb_store: Path, debian_layout: Path, tmp_path: Path) -> None:
    img = _build(tmp_path, deb_store, debian_layout, CHANGES, "changes")
    runs = [h for h in img.history if h["created_by"].startswith("RUN")]
    assert [h.get("empty_layer", False) for h in runs] == [False, False, False]
    assert len(img.layer_digests) == 4  # base + three RUN layers; `RUN true`'s is empty
    assert list(img.layer(3)) == []
    layer = img.layer(2)
    names = list(layer)
    # whiteouts first in their directory, as BuildKit's differ writes them
    assert "d/.wh.gone" in names and ".wh.del" in names
    assert names.index(".wh.del") < names.index("capped")
    # a directory deleted and made again: opaque, only the new content
    assert "opq/.wh..wh..opq" in names and "opq/n" in names
    assert not [n for n in names if n.startswith("opq/") and n not in ("opq/.wh..wh..opq", "opq/n")]
    # file -> dir and dir -> file
    assert layer["f2d"][0].isdir() and layer["f2d/c"][1] == b"c\n"
    assert layer["d2f"][0].isreg() and layer["d2f"][1] == b"file\n"
    assert not [n for n in names if n.startswith("d2f/")]
    # hard links stay links inside the layer (one body, then links to it)
    assert layer["p1"][0].isreg() and layer["p2"][0].islnk() and layer["p2"][0].linkname == "p1"
    assert {layer["h1"][0].islnk(), layer["h2"][0].islnk()} == {True, False}
    # special files, modes and set-uid/set-gid bits
    assert layer["fifo"][0].isfifo()
    assert layer["null2"][0].ischr() and (layer["null2"][0].devmajor, layer["null2"][0].devminor) == (1, 3)
    assert layer["suid"][0].mode == 0o4755
    assert layer["d/keep"][0].mode == 0o2750
    assert layer["sym"][0].issym() and layer["sym"][0].linkname == "../d/keep/a"
    # xattrs: file capabilities and user attributes
    pax = layer["capped"][0].pax_headers
    assert pax.get("SCHILY.xattr.security.capability", "").encode("utf-8", "surrogateescape") \
        .hex() == CAP_NET_RAW or bytes(pax["SCHILY.xattr.security.capability"], "latin-1").hex() \
        == CAP_NET_RAW
    assert pax.get("SCHILY.xattr.user.note") == "kept"
    # parents of changed files appear with their merged-view metadata
    assert layer["deep"][0].mode == 0o711
    assert (layer["deep/er"][0].uid, layer["deep/er"][0].gid) == (1000, 1002)
    assert layer["deep/er/still/t"][1] == b"t\n" and "deep/er/still/s" not in layer
    # nothing the executor made for the step: no /dev, /proc, /sys, /etc/hosts, ...
    assert not [n for n in names if n.split("/")[0] in ("dev", "proc", "sys", "run")
                or n in ("etc/hosts", "etc/resolv.conf", "etc/hostname", "etc")]


def test_package_manager_like_workload(deb_store: Path, debian_layout: Path, tmp_path: Path) -> None:
    img = _build(tmp_path, deb_store, debian_layout, PACKAGES, "packages")
    layer = img.layer(1)
    made = [n for n in layer if n.startswith("usr/share/pkg/") and "/file" in n]
    assert len(made) == 2000
    assert layer["usr/share/pkg/0/link0"][0].islnk()
    assert layer["usr/share/pkg/0/sym0"][0].issym()
    assert layer["usr/share/pkg/3"][0].mode == 0o700
    rewritten = [n for n in layer if n.startswith("usr/share/zoneinfo/") and layer[n][0].isreg()]
    assert len(rewritten) > 500
    deleted = img.layer(2)
    # a deleted tree is one whiteout, not one per file; a tree made again is opaque
    assert {"usr/share/.wh.doc", "usr/share/.wh.locale", "usr/share/man/.wh.man1"} <= set(deleted)
    assert not [n for n in deleted if n.startswith(("usr/share/doc/", "usr/share/locale/"))]
    assert [n for n in deleted if n.startswith("var/lib/dpkg/info/")] == [
        "var/lib/dpkg/info/.wh..wh..opq", "var/lib/dpkg/info/pkg.list"]
    top = img.layer(3)
    assert {n for n in top if "/.wh." in n} == {f"usr/share/pkg/.wh.{i}" for i in
                                                  [1, *range(10, 20)]}
    assert top["usr/share/pkg/0/file0"][1] == b"again\n"


# ---------------------------------------------------------------- against docker's BuildKit

def _record(tar: tarfile.TarFile, info: tarfile.TarInfo, tree: dict[str, tuple]) -> tuple:
    """(type, mode, uid, gid, content digest | link target | device) of one entry; a hard
    link takes its target's content."""
    if info.isreg():
        kind, what = "file", hashlib.sha256(tar.extractfile(info).read()).hexdigest()  # type: ignore[union-attr]
    elif info.islnk():
        kind, what = "file", tree.get(_clean(info.linkname), (None,) * 5)[4]
    elif info.issym():
        kind, what = "symlink", info.linkname
    elif info.isdir():
        kind, what = "dir", None
    elif info.ischr() or info.isblk():
        kind, what = "dev", (info.devmajor, info.devminor)
    else:
        kind, what = "fifo" if info.isfifo() else str(info.type), None
    return (kind, info.mode & 0o7777, info.uid, info.gid, what)


def _clean(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def _drop(tree: dict[str, tuple], path: str, *, keep_self: bool = False) -> None:
    for k in [k for k in tree if k.startswith(path + "/") or (k == path and not keep_self)]:
        del tree[k]


def _apply(tree: dict[str, tuple], fileobj: io.IOBase) -> None:
    """Apply one layer tar to ``tree`` (path -> record) as the OCI image spec says:
    whiteouts and opaque markers against the layers below, then the entries."""
    with tarfile.open(fileobj=fileobj) as tar:  # type: ignore[arg-type]
        infos = [(i, _clean(i.name)) for i in tar.getmembers()]
        for info, name in infos:
            parent, _, base = name.rpartition("/")
            if base == ".wh..wh..opq":
                _drop(tree, parent, keep_self=True)
            elif base.startswith(".wh."):
                _drop(tree, f"{parent}/{base[4:]}" if parent else base[4:])
        for info, name in infos:
            if not name or name == "." or name.rpartition("/")[2].startswith(".wh."):
                continue
            record = _record(tar, info, tree)
            if record[0] != "dir" and tree.get(name, ("",))[0] == "dir":
                _drop(tree, name)
            tree[name] = record


def _tree_of_tar(path: Path) -> dict[str, tuple]:
    tree: dict[str, tuple] = {}
    with open(path, "rb") as f:
        _apply(tree, f)  # type: ignore[arg-type]
    return tree


def _tree_of_image(img: OciImage, base: Path) -> dict[str, tuple]:
    """The base's tarball, then each of the image's own layers applied on it."""
    tree = _tree_of_tar(base)
    for n in range(1, len(img.layer_digests)):
        _apply(tree, io.BytesIO(img.layer_bytes(n)))  # type: ignore[arg-type]
    return tree


# Current BuildKit takes the stubs of the files it provides to a step (/etc/resolv.conf,
# /etc/hosts) out of a RUN layer; docker 20.10's still leaves them behind as empty files.
# The Debian base has /dev, /proc and /sys already, so their mount points make no change.
_BUILDER_SPECIFIC = {"dev", "proc", "sys", "etc/resolv.conf", "etc/hosts", "etc/hostname"}


def _normalise(tree: dict[str, tuple]) -> dict[str, tuple]:
    return {k: v for k, v in tree.items() if k not in _BUILDER_SPECIFIC}


def _docker(d: Dockerd, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return subprocess.run(["/usr/bin/docker", "-H", d.host, *args], check=False, capture_output=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def docker_base(dockerd: Dockerd, debian_layout: Path) -> Iterator[str]:
    if not Path("/usr/bin/docker").exists():
        pytest.skip("the Debian docker client (/usr/bin/docker) is missing")
    tag = "pybuild-test/debian-base:latest"
    done = _docker(dockerd, "import", str(DEBIAN_TARBALL), tag)
    if done.returncode != 0:
        pytest.skip(f"docker import failed: {done.stderr.decode()[-300:]}")
    yield tag


def test_same_filesystem_as_docker_buildkit(docker_base: str, dockerd: Dockerd,
                                             deb_store: Path, debian_layout: Path,
                                             tmp_path: Path) -> None:
    # Both workloads in one stage: one docker build and one export of the whole tree.
    both = CHANGES + PACKAGES.replace("FROM base\n", "", 1)
    dockerfile = both.replace("FROM base\n", f"FROM {docker_base}\n", 1)
    ctx = tmp_path / "docker-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    theirs = tmp_path / "docker.tar"
    done = _docker(dockerd, "build", "--network=host", "-o", f"type=tar,dest={theirs}", str(ctx))
    if done.returncode != 0:
        err = done.stderr.decode()[-800:]
        if "buildkit" in err.lower() or "not supported" in err or "runc" in err.lower():
            pytest.skip(f"docker's BuildKit cannot build here: {err}")
        raise AssertionError(err)
    ours_ctx = tmp_path / "ctx"
    ours_ctx.mkdir()
    (ours_ctx / "Dockerfile").write_text(both)
    ours = tmp_path / "ours.tar"
    pybuild("build", "--root", str(deb_store), "--build-context",
            f"base=oci-layout://{debian_layout}:latest", "-o", f"type=oci,dest={ours}",
            str(ours_ctx))
    a = _normalise(_tree_of_image(OciImage(ours), DEBIAN_TARBALL))
    b = _normalise(_tree_of_tar(theirs))
    only_ours = sorted(set(a) - set(b))
    only_theirs = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    assert (only_ours[:20], only_theirs[:20], [(k, a[k], b[k]) for k in differ[:20]]) == ([], [], [])
    assert len(a) > 5000
    shutil.rmtree(ctx)
