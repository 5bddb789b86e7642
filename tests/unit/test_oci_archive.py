"""builder.oci.image/layout/archive: image specs, OCI layouts and the two archive formats, read
back as tar files (the integration tests hand the same archives to skopeo, umoci and docker)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.digest import Digest, sha256_bytes, sha256_file
from builder.errors import LayerError
from builder.oci.archive import read_archive, write_docker_archive, write_oci_archive
from builder.oci.image import build_image
from builder.oci.layout import IMAGE_NAME, REF_NAME, OciLayout, write_layout
from builder.oci.types import (
    Descriptor,
    History,
    ImageConfig,
    ImageFormatError,
    MediaType,
    Platform,
    host_platform,
)


def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(tmp: Path, *, media: str = "oci", corrupt_diff_id: bool = False):
    """Two layers: one gzip, one uncompressed, as the store would hold them."""
    raws = [_layer_tar({"etc/hello": b"hello\n"}), _layer_tar({"bin/tool": b"#!/bin/sh\n"})]
    blobs = [gzip.compress(raws[0], mtime=0), raws[1]]
    types = [MediaType.OCI_LAYER_GZIP, MediaType.OCI_LAYER]
    store = tmp / "store"
    (store / "layers").mkdir(parents=True)
    layers = []
    for blob, mt in zip(blobs, types):
        path = store / "layers" / hashlib.sha256(blob).hexdigest()
        path.write_bytes(blob)
        layers.append((Descriptor(mt, sha256_bytes(blob), len(blob)), path))
    diff_ids = tuple(sha256_bytes(r) for r in raws)
    if corrupt_diff_id:
        diff_ids = (sha256_bytes(b"other"),) + diff_ids[1:]
    plat = host_platform()
    config = ImageConfig(plat.architecture, plat.os, plat.variant, diff_ids=diff_ids,
                         created="1970-01-01T00:00:00Z",
                         history=(History(created_by="ADD hello"), History(created_by="ADD tool")))
    return build_image(config, layers, blob_dir=store / "blobs", media=media)  # type: ignore[arg-type]


def _entries(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_build_image_writes_config_and_manifest_blobs(tmp_path):
    image = make_image(tmp_path)
    assert image.manifest.media_type == MediaType.OCI_MANIFEST
    assert image.config_digest == sha256_bytes(image.config_bytes)
    assert image.blob_path(image.config_digest).read_bytes() == image.config_bytes
    assert image.blob_path(image.manifest_digest).read_bytes() == image.manifest_bytes
    for layer in image.layers:
        assert sha256_file(image.blob_path(layer.digest)) == (layer.digest, layer.size)


def test_build_image_docker_media_types(tmp_path):
    image = make_image(tmp_path, media="docker")
    assert image.manifest.media_type == MediaType.DOCKER_MANIFEST
    assert image.manifest.config.media_type == MediaType.DOCKER_CONFIG
    assert [d.media_type for d in image.layers] == [MediaType.DOCKER_LAYER_GZIP,
                                                    MediaType.DOCKER_LAYER]


def test_build_image_checks_layer_count(tmp_path):
    image = make_image(tmp_path)
    with pytest.raises(LayerError, match="lists 2 diff ids but 1 layers"):
        build_image(image.config, [(image.layers[0], tmp_path)], blob_dir=tmp_path / "b")


def test_oci_archive_structure_is_deterministic(tmp_path):
    image = make_image(tmp_path)
    a = write_oci_archive(tmp_path / "a.tar", image, ["app"])
    b = write_oci_archive(tmp_path / "b.tar", image, ["app"])
    assert a.read_bytes() == b.read_bytes()
    entries = _entries(a)
    names = list(entries)
    assert names == sorted(names)
    assert {"oci-layout", "index.json", "manifest.json", "blobs", "blobs/sha256"} <= set(names)
    for info in entries.values():
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
    index = json.loads(_member(a, "index.json"))
    [entry] = index["manifests"]
    assert entry["digest"] == str(image.manifest_digest)
    assert entry["annotations"] == {REF_NAME: "latest", IMAGE_NAME: "docker.io/library/app:latest"}
    assert entry["platform"]["architecture"] == host_platform().architecture
    docker = json.loads(_member(a, "manifest.json"))
    assert docker == [{"Config": f"blobs/sha256/{image.config_digest.hex}", "RepoTags": ["app:latest"],
                       "Layers": [f"blobs/sha256/{d.digest.hex}" for d in image.layers]}]
    for name, info in entries.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(_member(a, name)).hexdigest() == name.rsplit("/", 1)[1]
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_source_date_epoch_sets_mtimes(tmp_path, monkeypatch):
    image = make_image(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    path = write_oci_archive(tmp_path / "a.tar", image)
    assert {i.mtime for i in _entries(path).values()} == {1700000000}


def test_docker_archive_has_uncompressed_layers_named_by_diff_id(tmp_path):
    image = make_image(tmp_path)
    path = write_docker_archive(tmp_path / "d.tar", image, ["example.com/app:v1", "busybox:1.36"])
    names = set(_entries(path))
    [entry] = json.loads(_member(path, "manifest.json"))
    assert entry["Config"] == f"{image.config_digest.hex}.json"
    assert entry["RepoTags"] == ["example.com/app:v1", "busybox:1.36"]
    assert entry["Layers"] == [f"{d.hex}/layer.tar" for d in image.config.diff_ids]
    for layer_name, diff_id in zip(entry["Layers"], image.config.diff_ids):
        assert layer_name in names
        assert sha256_bytes(_member(path, layer_name)) == diff_id
    assert _member(path, entry["Config"]) == image.config_bytes
    top = image.config.diff_ids[-1].hex
    assert json.loads(_member(path, "repositories")) == {"example.com/app": {"v1": top},
                                                          "busybox": {"1.36": top}}


def test_docker_archive_refuses_a_layer_that_does_not_match_its_diff_id(tmp_path):
    image = make_image(tmp_path, corrupt_diff_id=True)
    dest = tmp_path / "d.tar"
    with pytest.raises(LayerError, match="decompresses to sha256:.*but the image config says"):
        write_docker_archive(dest, image)
    assert not dest.exists() and not list(tmp_path.glob(".d.tar.tmp-*"))


def test_missing_blob_leaves_no_archive(tmp_path):
    image = make_image(tmp_path)
    image.blob_path(image.layers[1].digest).unlink()
    with pytest.raises(LayerError, match="missing from the store"):
        write_oci_archive(tmp_path / "a.tar", image)
    assert not (tmp_path / "a.tar").exists()


@pytest.mark.parametrize("writer", [write_oci_archive, write_docker_archive])
def test_read_archive_round_trip(tmp_path, writer):
    image = make_image(tmp_path)
    path = writer(tmp_path / "x.tar", image, ["latest"])
    got = read_archive(path)
    assert got.kind == ("oci" if writer is write_oci_archive else "docker")
    assert got.config_bytes == image.config_bytes and got.config_digest == image.config_digest
    assert [layer.diff_id for layer in got.layers] == list(image.config.diff_ids)
    for i, layer in enumerate(got.layers):
        with got.open_layer(i) as f:
            data = f.read()
        raw = gzip.decompress(data) if layer.media_type.endswith("gzip") else data
        assert sha256_bytes(raw) == layer.diff_id


def test_read_archive_garbage(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageFormatError, match="cannot be read as a tar file"):
        read_archive(bad)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ImageFormatError, match="neither an OCI archive nor a docker archive"):
        read_archive(empty)


def test_layout_write_resolve_and_retag(tmp_path):
    image = make_image(tmp_path)
    root = tmp_path / "layout"
    write_layout(root, image, ["app:v1"])
    write_layout(root, image, ["example.com/app:v2"])
    write_layout(root, image, ["app:v1"])  # the same name again replaces, not adds
    layout = OciLayout(root)
    # a re-used name moves to the end, as BuildKit's exporter does it
    assert [d.annotations[REF_NAME] for d in layout.index().manifests] == ["v2", "v1"]
    got = layout.resolve("v2")
    assert layout.resolve("app:v1").manifest_digest == image.manifest_digest
    assert layout.resolve("docker.io/library/app:v1").manifest_digest == image.manifest_digest
    assert got.manifest_digest == image.manifest_digest
    assert got.config_bytes == image.config_bytes
    assert OciLayout(root).resolve().manifest_digest == image.manifest_digest  # one digest
    with pytest.raises(ImageFormatError, match="no image tagged 'v3'; tags there: v1, v2"):
        layout.resolve("v3")
    # blobs are hard links into the store, not copies
    layer = image.layers[0]
    assert layout.blob_path(layer.digest).stat().st_ino == image.blob_path(layer.digest).stat().st_ino


def test_layout_index_follows_nested_index_to_platform(tmp_path):
    image = make_image(tmp_path)
    root = tmp_path / "layout"
    write_layout(root, image)
    inner = json.loads((root / "index.json").read_text())
    inner["mediaType"] = MediaType.OCI_INDEX
    inner_bytes = json.dumps(inner).encode()
    (root / "blobs/sha256" / sha256_bytes(inner_bytes).hex).write_bytes(inner_bytes)
    outer = {"schemaVersion": 2, "manifests": [{"mediaType": MediaType.OCI_INDEX,
             "digest": str(sha256_bytes(inner_bytes)), "size": len(inner_bytes),
             "annotations": {REF_NAME: "multi", IMAGE_NAME: "docker.io/library/x:multi"}}]}
    (root / "index.json").write_text(json.dumps(outer))
    assert OciLayout(root).resolve("multi").manifest_digest == image.manifest_digest
    with pytest.raises(ImageFormatError, match="no manifest for platform linux/s390x"):
        OciLayout(root).resolve("multi", platform=Platform("linux", "s390x"))


def test_layout_errors_name_the_directory(tmp_path):
    with pytest.raises(ImageFormatError, match=f"{tmp_path} is not an OCI image layout"):
        OciLayout(tmp_path).resolve()
    image = make_image(tmp_path)
    root = tmp_path / "layout"
    write_layout(root, image, ["app:v1"])
    (root / "blobs/sha256" / image.config_digest.hex).write_bytes(b"{}")
    with pytest.raises(ImageFormatError, match="does not match its digest"):
        OciLayout(root).resolve("v1")


def test_full_names_in_index_annotations(tmp_path):
    image = make_image(tmp_path)
    path = write_oci_archive(tmp_path / "a.tar", image, ["busybox:1.36", "ghcr.io/o/r:v2"])
    index = json.loads(_member(path, "index.json"))
    assert [m["annotations"] for m in index["manifests"]] == [
        {REF_NAME: "1.36", IMAGE_NAME: "docker.io/library/busybox:1.36"},
        {REF_NAME: "v2", IMAGE_NAME: "ghcr.io/o/r:v2"}]
    assert json.loads(_member(path, "manifest.json"))[0]["RepoTags"] == ["busybox:1.36",
                                                                       "ghcr.io/o/r:v2"]
    got = read_archive(path, tag="ghcr.io/o/r:v2")
    # both names point at the one manifest: the image has both
    assert got.repo_tags == ("docker.io/library/busybox:1.36", "ghcr.io/o/r:v2")
    assert Digest.parse(str(got.config_digest)) == image.config_digest


def test_names_for_tags_as_containerd_writes_them():
    from builder.oci.layout import names_for

    digest = "sha256:" + "a" * 64
    assert names_for("busybox") == ("docker.io/library/busybox:latest", "latest")
    assert names_for(f"busybox:1.36@{digest}") == (f"docker.io/library/busybox:1.36@{digest}",
                                                   f"1.36@{digest}")
    # containerd's Object of a digest-only reference keeps its "@"
    assert names_for(f"127.0.0.1:5000/x@{digest}") == (f"127.0.0.1:5000/x@{digest}", f"@{digest}")


def test_invalid_tag_is_a_usage_error(tmp_path):
    from builder.errors import UsageError

    image = make_image(tmp_path)
    with pytest.raises(UsageError, match="invalid image name 'Bad/Name:x'"):
        write_oci_archive(tmp_path / "a.tar", image, ["Bad/Name:x"])
    assert not (tmp_path / "a.tar").exists()
