"""What `-o` writes, as buildx spells it, checked with skopeo and umoci: OCI and docker archives
with their -t names, the root filesystem as a folder or a tar, --iidfile and --metadata-file,
layer compression, deterministic layers, and outputs that appear whole or not at all."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from tests.fixtures.buildtools import oci_config, oci_rootfs, pybuild, skopeo, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

DOCKERFILE = (
    "FROM base\n"
    "WORKDIR /app\n"
    "COPY files/ ./\n"
    'CMD ["cat", "/app/hello.txt"]\n')
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture()
def app(project: Path) -> Path:
    return write(project, {"Dockerfile": DOCKERFILE, "files/hello.txt": "hello\n",
                           "files/data.txt": "".join(f"{i * i:x} " for i in range(30000)), "files/sub/empty.txt": ""})


def _ctx(layout: Path) -> list[str]:
    return ["--build-context", f"base=oci-layout://{layout}"]


def test_archives_names_iidfile_and_metadata(app: Path, store: str, local_busybox: Path,
                                             tmp_path: Path) -> None:
    oci, docker = tmp_path / "img.oci.tar", tmp_path / "img.docker.tar"
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    pybuild("build", "--root", store, *_ctx(local_busybox), "-t", "example.com/team/app:1.0",
            "-t", "app:latest", "-o", f"type=oci,dest={oci}", "-o", f"type=docker,dest={docker}",
            "--iidfile", str(iid), "--metadata-file", str(meta), str(app))

    # OCI: skopeo reads it, umoci unpacks it, the index names both tags
    with tarfile.open(oci) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_json = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    refs = sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"])
    assert refs == ["docker.io/library/app:latest", "example.com/team/app:1.0"]
    # docker's manifest.json rides along, so `docker load` takes the OCI archive too
    assert sorted(manifest_json[0]["RepoTags"]) == ["app:latest", "example.com/team/app:1.0"]
    root = oci_rootfs(oci, tmp_path / "u", ref="latest")
    assert (root / "app/hello.txt").read_text() == "hello\n" and (root / "bin/busybox").is_file()
    assert (root / "app/sub/empty.txt").read_text() == ""

    # docker archive: skopeo picks each name
    for name in ("app:latest", "example.com/team/app:1.0"):
        info = json.loads(skopeo("inspect", f"docker-archive:{docker}:{name}"))
        assert info["Layers"]
    dcfg = oci_config(f"docker-archive:{docker}")
    ocfg = oci_config(f"oci-archive:{oci}:1.0")
    assert dcfg["config"] == ocfg["config"] and ocfg["config"]["Cmd"] == ["cat", "/app/hello.txt"]

    # --iidfile is the config digest; --metadata-file carries what buildx writes
    config_digest = iid.read_text()
    m = json.loads(meta.read_text())
    assert m["containerimage.config.digest"] == config_digest
    assert m["image.name"] == "example.com/team/app:1.0,app:latest"
    manifest_digest = json.loads(skopeo("inspect", f"oci-archive:{oci}:latest"))["Digest"]
    assert m["containerimage.digest"] == manifest_digest
    raw_config = skopeo("inspect", "--config", "--raw", f"oci-archive:{oci}:latest").encode()
    import hashlib
    assert config_digest == "sha256:" + hashlib.sha256(raw_config).hexdigest()


def test_local_and_tar_outputs_are_the_root_filesystem(app: Path, store: str, local_busybox: Path,
                                                       tmp_path: Path) -> None:
    local, rootfs_tar = tmp_path / "rootfs", tmp_path / "rootfs.tar"
    local.mkdir()
    (local / "stale").write_text("replaced as a whole")
    pybuild("build", "--root", store, *_ctx(local_busybox), "-o", f"type=local,dest={local}",
            "-o", f"type=tar,dest={rootfs_tar}", str(app))
    assert (local / "app/hello.txt").read_text() == "hello\n" and (local / "bin/busybox").is_file()
    with tarfile.open(rootfs_tar) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("app/hello.txt").read() == b"hello\n"  # type: ignore[union-attr]
    on_disk = {str(p.relative_to(local)) for p in local.rglob("*")} - {"stale"}
    assert {n.rstrip("/") for n in names} - {"."} == on_disk
    # `-o DIR` is type=local; its missing parent folders are made, as buildx makes them
    bare = tmp_path / "out/linux/amd64"
    pybuild("build", "--root", store, *_ctx(local_busybox), "-o", str(bare), str(app))
    assert (bare / "app/hello.txt").is_file()


def _layers(archive: Path) -> list[tuple[str, bytes]]:
    """(media type, first bytes of the blob) of every layer of an OCI archive."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        mdesc = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{mdesc}"))  # type: ignore[arg-type]
        out = []
        for layer in manifest["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            out.append((layer["mediaType"], blob.read(16)))  # type: ignore[union-attr]
        return out


def _zstd_names(archive: Path) -> set[str]:
    import zstandard

    work = archive.with_suffix(".layout")
    skopeo("copy", "--quiet", f"oci-archive:{archive}", f"oci:{work}:x")
    manifest = json.loads(skopeo("inspect", "--raw", f"oci:{work}:x"))
    digest = manifest["layers"][0]["digest"].split(":")[1]
    with open(work / "blobs/sha256" / digest, "rb") as f, \
            zstandard.ZstdDecompressor().stream_reader(f) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        return {m.name for m in tar}


def test_compression_choices(app: Path, store: str, tmp_path: Path) -> None:
    write(app, {"Dockerfile": "FROM scratch\nCOPY files/ /app/\n"})
    seen = {}
    for comp in ("gzip", "zstd", "uncompressed"):
        out = tmp_path / f"{comp}.tar"
        # the same store each time: a cached step must still give the asked-for compression
        pybuild("build", "--root", store, "--compression", comp, "-o", f"type=oci,dest={out}",
                str(app))
        (media, head), = _layers(out)
        seen[comp] = media
        if comp == "gzip":
            assert media.endswith("tar+gzip") and head[:2] == b"\x1f\x8b"
            assert head[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
        elif comp == "zstd":
            assert media.endswith("tar+zstd") and head[:4] == ZSTD_MAGIC
        else:
            assert media == "application/vnd.oci.image.layer.v1.tar" and b"app" in head
        if comp == "zstd":  # Debian's umoci predates zstd layers: read this one ourselves
            assert _zstd_names(out) >= {"app/hello.txt", "app/sub/empty.txt"}
            continue
        assert (oci_rootfs(out, tmp_path / f"u-{comp}") / "app/hello.txt").read_text() == "hello\n"
    # a level changes the bytes, not the content
    sizes = []
    for level in (1, 9):
        out = tmp_path / f"level{level}.tar"
        pybuild("build", "--root", str(tmp_path / f"store{level}"), "--compression", "gzip",
                "--compression-level", str(level), "-o", f"type=oci,dest={out}", str(app))
        with tarfile.open(out) as tar:
            blobs = [m for m in tar.getmembers() if m.name.startswith("blobs/") and m.size > 2000]
            sizes.append(max(m.size for m in blobs))
    assert sizes[0] > sizes[1]


def test_layers_are_deterministic_across_stores_and_time(app: Path, local_busybox: Path,
                                                         tmp_path: Path) -> None:
    # COPY keeps the files' own times: the same files give the same layer, whenever built
    write(app, {"Dockerfile": "FROM base\nCOPY files/ /app/\n"})
    digests = []
    for n in range(2):
        out = tmp_path / f"{n}.tar"
        pybuild("build", "--root", str(tmp_path / f"store{n}"), *_ctx(local_busybox),
                "-o", f"type=oci,dest={out}", str(app))
        digests.append(json.loads(skopeo("inspect", f"oci-archive:{out}"))["Layers"])
        if n == 0:
            time.sleep(1.1)  # a second later: any build-time clock in a layer would show
    assert digests[0] == digests[1] and len(digests[0]) == 2
    # the gzip header of a layer we made carries no time and no name
    with tarfile.open(tmp_path / "0.tar") as tar:
        blob = tar.extractfile(f"blobs/sha256/{digests[0][-1].split(':')[1]}").read()  # type: ignore[union-attr]
    assert blob[3] & 0x08 == 0 and blob[4:8] == b"\0\0\0\0"
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(blob))) as layer:
        members = layer.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))  # parents first, sorted
    assert all(m.uname == "" and m.gname == "" for m in members)

    # WORKDIR makes its folder at build time (as BuildKit does); with SOURCE_DATE_EPOCH the
    # whole image, config and all, is the same byte for byte
    write(app, {"Dockerfile": DOCKERFILE})
    manifests = []
    for n in range(2):
        out = tmp_path / f"e{n}.tar"
        pybuild("build", "--root", str(tmp_path / f"estore{n}"), *_ctx(local_busybox),
                "-o", f"type=oci,dest={out}", str(app), env={"SOURCE_DATE_EPOCH": "1700000000"})
        manifests.append(json.loads(skopeo("inspect", f"oci-archive:{out}"))["Digest"])
        if n == 0:
            time.sleep(1.1)
    assert manifests[0] == manifests[1]


def test_outputs_appear_whole_or_not_at_all(app: Path, store: str, local_busybox: Path,
                                            tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    dest.write_bytes(b"previous content")
    iid = tmp_path / "iid"
    write(app, {"Dockerfile": "FROM base\nCOPY files/ /\nRUN exit 3\n"})
    failed = pybuild("build", "--root", store, *_ctx(local_busybox), "-o", f"type=oci,dest={dest}",
                     "-o", f"type=tar,dest={tmp_path / 'new.tar'}", "--iidfile", str(iid), str(app),
                     check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert dest.read_bytes() == b"previous content"  # not truncated
    assert not (tmp_path / "new.tar").exists() and not iid.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar", "project", "store"]

    # an output that cannot be written is an error, and the others written are whole
    write(app, {"Dockerfile": "FROM base\nCOPY files/ /\n"})
    (tmp_path / "blocker").write_text("a file, not a folder")
    failed = pybuild("build", "--root", store, *_ctx(local_busybox), "-o", f"type=oci,dest={dest}",
                     "-o", f"type=tar,dest={tmp_path / 'blocker/x.tar'}", str(app), check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "blocker" in failed.stderr
    assert dest.read_bytes() == b"previous content" or tarfile.is_tarfile(dest)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_tag_fails_before_building(app: Path, store: str, tmp_path: Path) -> None:
    failed = pybuild("build", "--root", store, "-t", "Bad Name", "-o",
                     f"type=oci,dest={tmp_path / 'x.tar'}", str(app), check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "repository name must be lowercase" in failed.stderr
    assert "FROM" not in failed.stderr and not (tmp_path / "x.tar").exists()  # nothing was built
