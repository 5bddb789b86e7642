"""A step's layer is kept as its snapshot only: its tar is hashed, not written, when the step
runs, and made (checked against its digest) the first time a save, an export or a push reads
it. What the user gets must not change: the same digests, the same files, a prune that keeps
what a name needs, a verify that still finds damage, and a clear error rather than a wrong
layer when a snapshot was tampered with."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.pushutil import Session, assert_one_sentence_error, docker_loads, imported


def _app(tmp_path: Path, text: str = "lazy\n") -> tuple[Session, Path]:
    s = imported(tmp_path, "base:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY a /srv/a\nCMD [\"cat\", \"/srv/a\"]\n")
    (ctx / "a").write_text(text)
    return s, ctx


def _top_layer(s: Session, name: str) -> str:
    return str(json.loads(s.run("inspect", name).stdout)[0]["Config"]["rootfs"]["diff_ids"][-1])


def _saved_layer(s: Session, name: str, dest: Path) -> tuple[str, dict[str, bytes]]:
    """sha256 of the top layer's bytes in a `pybuild save` archive, and its regular files."""
    s.run("save", name, "-o", str(dest))
    with tarfile.open(dest) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        top = manifest["layers"][-1]
        data = tar.extractfile("blobs/sha256/" + top["digest"].split(":")[1]).read()  # type: ignore[union-attr]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest == top["digest"]
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        files = {m.name: layer.extractfile(m).read() for m in layer.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return digest, files


def test_a_step_layer_is_made_from_its_snapshot_when_first_read(tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    s, ctx = _app(tmp_path)
    s.run("build", "-q", "-t", "app", str(ctx))
    diff_id = _top_layer(s, "app")
    hexd = diff_id.split(":")[1]
    blob = s.store / "blobs" / "sha256" / hexd
    assert (s.store / "snapshots" / hexd).is_dir() and not blob.exists()
    # the store's image names its plain tar; the save makes it, byte for byte that digest
    digest, files = _saved_layer(s, "app", tmp_path / "app.tar")
    assert digest == diff_id and files == {"srv/a": b"lazy\n"}
    assert blob.is_file()
    out = subprocess.run(["skopeo", "inspect", f"oci-archive:{tmp_path / 'app.tar'}"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Layers"][-1] == diff_id
    image_id = json.loads(s.run("inspect", "app").stdout)[0]["Id"]
    docker_loads(request, tmp_path / "app.tar", "app:latest", image_id)
    # an export made straight from the snapshot (gzip) holds the same tar
    blob.unlink()
    s.run("build", "-q", "-t", "app", "-o", f"type=oci,dest={tmp_path / 'gz.tar'}", str(ctx))
    with tarfile.open(tmp_path / "gz.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        top = manifest["layers"][-1]
        assert top["mediaType"].endswith("tar+gzip")
        plain = gzip.decompress(tar.extractfile(  # type: ignore[union-attr]
            "blobs/sha256/" + top["digest"].split(":")[1]).read())
    assert "sha256:" + hashlib.sha256(plain).hexdigest() == diff_id
    assert not blob.exists()  # a compressed export needs no plain tar in the store
    assert "damaged" not in s.run("cache", "verify").stdout


def test_a_pruned_cache_keeps_what_a_name_needs(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s, ctx = _app(tmp_path, "kept\n")
    s.run("build", "-q", "-t", "app", str(ctx))
    diff_id = _top_layer(s, "app")
    s.run("cache", "prune", "--all")
    # the record is gone, the tagged image's layer (a snapshot only) is not
    assert (s.store / "snapshots" / diff_id.split(":")[1]).is_dir()
    digest, files = _saved_layer(s, "app", tmp_path / "app.tar")
    assert digest == diff_id and files == {"srv/a": b"kept\n"}
    image_id = json.loads(s.run("inspect", "app").stdout)[0]["Id"]
    docker_loads(request, tmp_path / "app.tar", "app:latest", image_id)
    # once the name goes, so does the layer
    s.run("rmi", "app")
    s.run("cache", "prune", "--all")
    assert not (s.store / "snapshots" / diff_id.split(":")[1]).exists()


def test_a_tampered_snapshot_is_an_error_not_a_wrong_layer(tmp_path: Path) -> None:
    s, ctx = _app(tmp_path, "original\n")
    s.run("build", "-q", "-t", "app", str(ctx))
    hexd = _top_layer(s, "app").split(":")[1]
    (s.store / "snapshots" / hexd / "srv" / "a").write_text("changed behind our back\n")
    failed = s.run("save", "app", "-o", str(tmp_path / "app.tar"), check=False)
    assert_one_sentence_error(failed, f"the snapshot of layer sha256:{hexd} no longer gives its tar",
                              "cache verify --repair")
    assert not (tmp_path / "app.tar").exists()
    assert not (s.store / "blobs" / "sha256" / hexd).exists()
    # nor does a compressed export, which hashes the tar again once the files have changed
    exported = s.run("build", "-q", "-t", "app", "-o", f"type=oci,dest={tmp_path / 'gz.tar'}",
                     str(ctx), check=False)
    assert_one_sentence_error(exported, f"the snapshot of layer sha256:{hexd} no longer gives its tar")
    assert not (tmp_path / "gz.tar").exists()
    found = s.run("cache", "verify", check=False)
    assert found.returncode != 0 and f"snapshot sha256:{hexd}" in found.stdout + found.stderr
    s.run("cache", "verify", "--repair")
    # the next build makes the layer again, right (a new layer: /srv is made again, now)
    s.run("build", "-q", "-t", "app", str(ctx))
    _, files = _saved_layer(s, "app", tmp_path / "again.tar")
    assert files == {"srv/a": b"original\n"}


def test_a_layer_with_clamped_times_is_written_at_once(tmp_path: Path) -> None:
    s, ctx = _app(tmp_path)
    s.run("build", "-q", "-t", "app", str(ctx), env={"SOURCE_DATE_EPOCH": "1700000000"})
    hexd = _top_layer(s, "app").split(":")[1]
    # its tar cannot be made again from the snapshot alone (the epoch is not kept there)
    assert (s.store / "blobs" / "sha256" / hexd).is_file()
    digest, files = _saved_layer(s, "app", tmp_path / "app.tar")
    assert digest.split(":")[1] == hexd and files == {"srv/a": b"lazy\n"}
