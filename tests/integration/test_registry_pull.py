"""Pulling from a real registry (Debian's docker-registry, started by tests/fixtures/registry.py)
with builder.oci.registry: manifests, platforms, verified blobs and the errors users see."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from typing import Any

import pytest
import requests

from builder.digest import Digest, sha256_bytes, sha256_file
from builder.errors import RegistryError
from builder.oci.registry import Registry
from builder.oci.types import MediaType, Platform, host_platform
from builder.reference import ImageRef
from tests.fixtures.registry import file_layer, host_arch, write_image_layout


def _registry(host: str, **kw: Any) -> Registry:
    return Registry(host, credentials=None, **kw)


def test_pull_busybox_and_verify_blobs(registry, busybox_image, tmp_path):
    ref = ImageRef.parse(busybox_image.ref)
    reg = _registry(ref.api_host)
    assert reg.base == f"http://{registry.host}/v2/"  # loopback: plain HTTP
    image = reg.resolve(ref)
    assert str(image.manifest_digest) == busybox_image.digest
    assert str(image.manifest.config.digest) == busybox_image.config_digest
    assert image.config.architecture == host_arch() and image.config.config.cmd == ("sh",)
    [layer] = image.manifest.layers
    assert layer.media_type == MediaType.OCI_LAYER_GZIP
    path = reg.fetch_blob(ref, layer, tmp_path / "layer")
    assert sha256_file(path) == (layer.digest, layer.size)
    raw = gzip.decompress(path.read_bytes())
    assert sha256_bytes(raw) == image.config.diff_ids[0]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        assert tar.getmember("bin/sh").linkname == "busybox"
    assert {"bin/busybox", "etc/passwd", "etc/group"} <= set(names)


def test_pull_by_digest(registry, busybox_image):
    ref = ImageRef.parse(f"{registry.host}/busybox@{busybox_image.digest}")
    image = _registry(registry.host).resolve(ref)
    assert str(image.manifest_digest) == busybox_image.digest


def test_index_resolves_to_host_and_other_platforms(registry, multiarch_image):
    ref = ImageRef.parse(multiarch_image.ref)
    reg = _registry(registry.host)
    here = reg.resolve(ref)
    assert str(here.manifest.config.digest) == multiarch_image.config_digest
    assert here.config.architecture == host_platform().architecture
    other = Platform("linux", "arm64", "v8") if host_arch() != "arm64" else Platform("linux", "amd64")
    there = reg.resolve(ref, other)
    assert there.config.architecture == other.architecture
    assert there.config.config.cmd == ("/bin/false",)
    with pytest.raises(RegistryError) as err:
        reg.resolve(ref, Platform("linux", "riscv64"))
    message = str(err.value)
    assert f"{registry.host}/multi:latest has no manifest for platform linux/riscv64" in message
    assert "available: linux/amd64, linux/arm64/v8" in message
    assert err.value.hint == "choose one with --platform"


def test_missing_repository_and_tag_errors(registry, busybox_image):
    reg = _registry(registry.host)
    with pytest.raises(RegistryError) as err:
        reg.resolve(ImageRef.parse(f"{registry.host}/nothere:1"))
    assert str(err.value).startswith(f"{registry.host}/nothere: manifest 1 not found (HTTP 404)")
    assert str(err.value).endswith("MANIFEST_UNKNOWN: manifest unknown")  # the registry's words
    with pytest.raises(RegistryError) as err:
        reg.resolve(ImageRef.parse(f"{registry.host}/busybox:9.9"))
    assert str(err.value).startswith(f"{registry.host}/busybox: manifest 9.9 not found (HTTP 404)")
    assert "MANIFEST_UNKNOWN" in str(err.value)


def test_nothing_listening_is_reported(tmp_path):
    from tests.fixtures.registry import free_port

    reg = _registry(f"127.0.0.1:{free_port()}", sleep=lambda s: None)
    with pytest.raises(RegistryError, match=r"cannot reach the registry \(ConnectionError\)"):
        reg.resolve(ImageRef.parse(f"{reg.host}/x:1"))


@pytest.fixture
def corruptible(registry, tmp_path):
    """An image of its own (unique content), so corrupting its blob harms no other test."""
    layout = tmp_path / "layout"
    unique = f"{tmp_path}\n".encode()
    _, [layer], _ = write_image_layout(layout, "t", [file_layer({"u": unique})],
                                       arch=host_arch(), cmd=["x"])
    repo = f"corrupt-{os.getpid()}-{abs(hash(str(tmp_path))) % 100000}"
    registry.push_layout(layout, "t", f"{repo}:t")
    return ImageRef.parse(f"{registry.host}/{repo}:t"), Digest.parse(layer)


def test_blob_corrupted_in_registry_storage_is_refused(registry, corruptible, tmp_path):
    ref, layer_digest = corruptible
    reg = _registry(registry.host)
    image = reg.resolve(ref)
    [desc] = image.manifest.layers
    assert desc.digest == layer_digest
    data_path = registry.blob_data_path(str(layer_digest))
    data = bytearray(data_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    data_path.write_bytes(bytes(data))
    dest = tmp_path / "pulled" / "layer"
    with pytest.raises(RegistryError) as err:
        reg.fetch_blob(ref, desc, dest)
    assert f"blob {layer_digest} does not match its digest" in str(err.value)
    assert str(ref.repository) in str(err.value) and registry.host in str(err.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


class Tampering:
    """A transport that passes everything to requests but appends bytes to blob bodies."""

    def __init__(self) -> None:
        self.session = requests.Session()

    def request(self, method: str, url: str, **kw: Any) -> Any:
        resp = self.session.request(method, url, **kw)
        if "/blobs/" in url:
            original = resp.iter_content
            resp.iter_content = lambda n: iter([*original(n), b"extra bytes"])  # type: ignore[method-assign]
        return resp


def test_oversized_blob_through_a_tampering_proxy_is_refused(registry, busybox_image, tmp_path):
    ref = ImageRef.parse(busybox_image.ref)
    reg = _registry(registry.host, transport=Tampering())
    [desc] = _registry(registry.host).resolve(ref).manifest.layers
    with pytest.raises(RegistryError, match=f"blob {desc.digest} is larger than the {desc.size} bytes"):
        reg.fetch_blob(ref, desc, tmp_path / "layer")
    assert list(tmp_path.iterdir()) == []
