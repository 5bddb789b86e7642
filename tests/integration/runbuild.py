"""Helpers for the `pybuild build` RUN tests (tests/integration/test_run_*.py): run the CLI,
read what it wrote (OCI archive: config and layer tars), make base images from rootfs trees.

The archive is read here with tarfile/json/gzip, independently of builder.oci."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEBIAN_TARBALL = Path("/var/cache/pybuild-tests/debian-bookworm-minbase-python3.tar")


def pybuild(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["pybuild", *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Project:
    """A build context folder and a store; ``build()`` writes an OCI archive and reads it."""

    root: Path
    store: Path
    out: Path
    contexts: tuple[str, ...] = ()

    def dockerfile(self, text: str, **files: str) -> None:
        (self.root / "Dockerfile").write_text(text)
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    def build(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
        ctx = [a for c in self.contexts for a in ("--build-context", c)]
        return pybuild("build", "--root", str(self.store), "--progress", "plain", *ctx,
                       "-o", f"type=oci,dest={self.out}", "--metadata-file",
                       str(self.out.with_suffix(".json")), *args, str(self.root), check=check,
                       env=env, timeout=timeout)

    def image(self) -> OciImage:
        return OciImage(self.out)

    def metadata(self) -> dict:
        return json.loads(self.out.with_suffix(".json").read_text())


class OciImage:
    """The single image of an OCI archive: its config and its layers as tar entries."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        with tarfile.open(archive) as tar:
            self._blobs = {m.name: m for m in tar.getmembers()}
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            manifest = json.loads(self._blob(tar, index["manifests"][0]["digest"]))
            self.config = json.loads(self._blob(tar, manifest["config"]["digest"]))
            self.layer_digests = [d["digest"] for d in manifest["layers"]]

    @staticmethod
    def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
        return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]

    def layer_bytes(self, n: int) -> bytes:
        with tarfile.open(self.archive) as tar:
            raw = self._blob(tar, self.layer_digests[n])
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw

    def layer(self, n: int) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
        """Entries of layer ``n`` by name ("./" and trailing "/" dropped), with file data."""
        out = {}
        with tarfile.open(fileobj=io.BytesIO(self.layer_bytes(n))) as tar:
            for info in tar:
                data = tar.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
                out[info.name.removeprefix("./").rstrip("/")] = (info, data)
        return out

    @property
    def history(self) -> list[dict]:
        return list(self.config.get("history", []))


def write_layout(layout: Path, layer_tar: Path, *, env: list[str] | None = None) -> None:
    """An OCI layout (tag "latest") of one uncompressed layer, hard-linked from ``layer_tar``."""
    h = hashlib.sha256()
    with open(layer_tar, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    try:
        os.link(layer_tar, blobs / h.hexdigest())
    except FileExistsError:
        pass
    except OSError:
        shutil.copyfile(layer_tar, blobs / h.hexdigest())
    size = layer_tar.stat().st_size

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = {"architecture": arch, "os": "linux",
              "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]},
              "history": [{"created_by": "test base"}]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **blob(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": "sha256:" + h.hexdigest(), "size": size}]}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             **blob(json.dumps(manifest).encode()),
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))


def busybox_tree(root: Path) -> Path:
    """A busybox root with users root, nobody, app (1000, also in extra 1001) and other 1002."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc/group").write_text(
        "root:x:0:\napp:x:1000:\nextra:x:1001:app\nother:x:1002:\nnogroup:x:65534:\n")
    for d, mode in (("tmp", 0o1777), ("root", 0o700), ("home/app", 0o755)):
        (root / d).mkdir(parents=True)
        os.chmod(root / d, mode)
    os.chown(root / "home/app", 1000, 1000)
    return root


def tar_tree(root: Path, dest: Path) -> Path:
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-cf", str(dest), "."],
                   check=True)
    return dest


@pytest.fixture(scope="session")
def bb_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with users as an OCI layout: `--build-context bb=oci-layout://DIR:latest`."""
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    base = tmp_path_factory.mktemp("bb")
    tree = busybox_tree(base / "tree")
    layout = base / "layout"
    write_layout(layout, tar_tree(tree, base / "layer.tar"))
    return layout


@pytest.fixture(scope="session")
def debian_layout(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debootstrapped Debian (tests/fixtures/rootfs.py) as an OCI layout of one layer."""
    if not DEBIAN_TARBALL.exists():
        pytest.skip("the Debian tarball is missing")
    layout = tmp_path_factory.mktemp("debian") / "layout"
    write_layout(layout, DEBIAN_TARBALL)
    return layout


@pytest.fixture
def project(tmp_path: Path, bb_layout: Path) -> Iterator[Project]:
    root = tmp_path / "ctx"
    root.mkdir()
    yield Project(root, tmp_path / "store", tmp_path / "out.tar",
                  contexts=(f"bb=oci-layout://{bb_layout}:latest",))


def store_files(store: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(store):
        for name in filenames + dirnames:
            yield Path(dirpath, name)
