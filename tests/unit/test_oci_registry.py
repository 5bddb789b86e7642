"""builder.oci.registry through a scripted transport: auth round trip, Accept headers, index to
platform, retries with Retry-After, blob verification, error messages. The real registry is
exercised in tests/integration/test_registry_pull.py."""
from __future__ import annotations

import json
from typing import Any

import pytest

from builder.digest import sha256_bytes
from builder.errors import RegistryError
from builder.oci.registry import MANIFEST_ACCEPT, Registry, is_loopback_host
from builder.oci.types import Descriptor, MediaType, Platform
from builder.reference import ImageRef
from tests.unit.test_oci_auth import FakeResponse

LAYER = b"layer bytes" * 100
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
    "type": "layers", "diff_ids": [str(sha256_bytes(b"diff"))]}}).encode()
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": MediaType.DOCKER_MANIFEST,
    "config": {"mediaType": MediaType.DOCKER_CONFIG, "digest": str(sha256_bytes(CONFIG)),
               "size": len(CONFIG)},
    "layers": [{"mediaType": MediaType.DOCKER_LAYER_GZIP, "digest": str(sha256_bytes(LAYER)),
                "size": len(LAYER)}]}).encode()
INDEX = json.dumps({"schemaVersion": 2, "mediaType": MediaType.DOCKER_MANIFEST_LIST, "manifests": [
    {"mediaType": MediaType.DOCKER_MANIFEST, "digest": str(sha256_bytes(MANIFEST)),
     "size": len(MANIFEST), "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": MediaType.DOCKER_MANIFEST, "digest": "sha256:" + "9" * 64, "size": 1,
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}).encode()


class Router:
    """A fake registry: URL path suffix -> list of responses (last one repeats)."""

    def __init__(self, routes: dict[str, list[FakeResponse]]) -> None:
        self.routes = routes
        self.log: list[tuple[str, dict[str, str]]] = []

    def request(self, method: str, url: str, **kw: Any) -> FakeResponse:
        self.log.append((url, dict(kw.get("headers") or {})))
        for suffix, answers in self.routes.items():
            if url.endswith(suffix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        return FakeResponse(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}')


def ok(body: bytes, media: str = "") -> FakeResponse:
    return FakeResponse(200, body, {"Content-Type": media} if media else {})


def make(routes: dict[str, list[FakeResponse]], host: str = "r.example") -> tuple[Registry, Router, list[float]]:
    router = Router(routes)
    sleeps: list[float] = []
    return Registry(host, transport=router, credentials=None, sleep=sleeps.append), router, sleeps


def test_loopback_hosts_are_plain_http():
    for host in ["localhost:5000", "127.0.0.1:5000", "127.9.9.9", "[::1]:5000", "::1"]:
        assert is_loopback_host(host), host
        assert Registry(host, transport=Router({}), credentials=None).base.startswith("http://")
    for host in ["r.example", "10.0.0.1:5000", "localhost.example.com"]:
        assert not is_loopback_host(host), host
    assert Registry("r.example", transport=Router({}), credentials=None).base == "https://r.example/v2/"
    assert Registry("r.example:5000", transport=Router({}), credentials=None,
                    insecure_registries={"r.example:5000"}).base == "http://r.example:5000/v2/"


def test_resolve_follows_manifest_list_to_platform_with_token_auth():
    challenge = {"WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="r.example"'}
    reg, router, _ = make({
        "/token?service=r.example&scope=repository%3Alib%2Fapp%3Apull": [ok(b'{"token":"TOK"}')],
        "/manifests/1.0": [FakeResponse(401, b"", challenge), ok(INDEX, MediaType.DOCKER_MANIFEST_LIST)],
        f"/manifests/{sha256_bytes(MANIFEST)}": [ok(MANIFEST, MediaType.DOCKER_MANIFEST)],
        f"/blobs/{sha256_bytes(CONFIG)}": [ok(CONFIG)],
    })
    got = reg.resolve(ImageRef.parse("r.example/lib/app:1.0"), Platform("linux", "amd64"))
    assert got.manifest_digest == sha256_bytes(MANIFEST)
    assert got.resolved_digest == sha256_bytes(INDEX)  # what the tag named: provenance's digest
    assert got.config.architecture == "amd64" and got.config_bytes == CONFIG
    urls = [u for u, _ in router.log]
    assert urls[0] == "https://r.example/v2/lib/app/manifests/1.0"
    assert router.log[0][1]["Accept"] == MANIFEST_ACCEPT
    assert "Authorization" not in router.log[0][1]
    assert all(h.get("Authorization") == "Bearer TOK" for u, h in router.log[2:])
    for media in (MediaType.OCI_INDEX, MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST,
                  MediaType.DOCKER_MANIFEST_LIST):
        assert media in MANIFEST_ACCEPT


def test_no_matching_platform_lists_available():
    reg, _, _ = make({"/manifests/1.0": [ok(INDEX)]})
    with pytest.raises(RegistryError) as err:
        reg.resolve(ImageRef.parse("r.example/lib/app:1.0"), Platform("linux", "s390x"))
    assert "r.example/lib/app:1.0 has no manifest for platform linux/s390x" in str(err.value)
    assert "available: linux/amd64, linux/arm64/v8" in str(err.value)


def test_not_found_names_registry_repository_and_status():
    reg, _, _ = make({})
    with pytest.raises(RegistryError) as err:
        reg.resolve(ImageRef.parse("r.example/lib/nope:2"))
    assert str(err.value) == ("r.example/lib/nope: manifest 2 not found (HTTP 404): "
                              "NAME_UNKNOWN: repository name not known to registry")


def test_retries_honour_retry_after_and_are_bounded():
    reg, router, sleeps = make({"/manifests/1.0": [FakeResponse(429, b"", {"Retry-After": "3"}),
                                                   FakeResponse(503), ok(MANIFEST)],
                                f"/blobs/{sha256_bytes(CONFIG)}": [ok(CONFIG)]})
    assert reg.resolve(ImageRef.parse("r.example/lib/app:1.0")).resolved_digest is None  # no index
    assert sleeps == [3.0, 1.0]
    reg, router, sleeps = make({"/manifests/1.0": [FakeResponse(500)]})
    with pytest.raises(RegistryError, match=r"r.example/lib/app: manifest 1.0: the registry answered HTTP 500"):
        reg.resolve(ImageRef.parse("r.example/lib/app:1.0"))
    assert len(router.log) == 4 and sleeps == [0.5, 1.0, 2.0]


class Refusing:
    def request(self, method: str, url: str, **kw: Any) -> Any:
        raise ConnectionRefusedError("refused")


def test_connection_errors_are_retried_then_reported():
    sleeps: list[float] = []
    reg = Registry("r.example", transport=Refusing(), credentials=None, sleep=sleeps.append)
    with pytest.raises(RegistryError, match="r.example: cannot reach the registry "
                                            r"\(ConnectionRefusedError\) after 4 attempts"):
        reg.resolve(ImageRef.parse("r.example/lib/app:1.0"))
    assert len(sleeps) == 3


def test_fetch_blob_verifies_digest_and_size(tmp_path):
    desc = Descriptor(MediaType.DOCKER_LAYER_GZIP, sha256_bytes(LAYER), len(LAYER))
    ref = ImageRef.parse("r.example/lib/app:1.0")
    reg, _, _ = make({f"/blobs/{desc.digest}": [ok(LAYER)]})
    assert reg.fetch_blob(ref, desc, tmp_path / "good").read_bytes() == LAYER
    bad = LAYER[:-1] + b"X"
    reg, _, _ = make({f"/blobs/{desc.digest}": [ok(bad)]})
    with pytest.raises(RegistryError, match="does not match its digest .*nothing was kept"):
        reg.fetch_blob(ref, desc, tmp_path / "bad")
    reg, _, _ = make({f"/blobs/{desc.digest}": [ok(LAYER + b"more")]})
    with pytest.raises(RegistryError, match="larger than the 1100 bytes"):
        reg.fetch_blob(ref, desc, tmp_path / "big")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_manifest_digest_pinned_by_reference_is_checked():
    digest = sha256_bytes(MANIFEST)
    reg, _, _ = make({f"/manifests/{digest}": [ok(MANIFEST[:-1] + b" }")]})
    with pytest.raises(RegistryError, match="has digest sha256:"):
        reg.resolve(ImageRef.parse(f"r.example/lib/app@{digest}"))
