"""builder.oci.push against an in-memory registry behind the Transport seam: HEAD skips, mounts
(accepted and refused), monolithic and chunked uploads, resuming from the registry's Range after
a connection dropped mid-chunk, retries with Retry-After, the manifest last, and what a failure
says. The real registry is exercised in tests/integration/test_push_*.py."""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from builder.digest import sha256_bytes
from builder.errors import RegistryError
from builder.oci.auth import Credentials
from builder.oci.image import build_image
from builder.oci.push import _range_end, push_image
from builder.oci.registry import Registry
from builder.oci.types import Descriptor, ImageConfig, MediaType
from builder.reference import ImageRef
from tests.unit.test_oci_auth import FakeResponse


@dataclass
class MemRegistry:
    """Enough of the distribution API, in memory. ``faults`` maps a method to a list of
    actions taken by its next calls: an int status, "drop" (connection error before anything
    is received) or "half" (half the body is kept, then the connection breaks)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    faults: dict[str, list[Any]] = field(default_factory=dict)
    refuse_mount: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    n: int = 0

    def request(self, method: str, url: str, **kw: Any) -> FakeResponse:
        parts = urlsplit(url)
        path, query = parts.path, parse_qs(parts.query)
        body = kw.get("data")
        data = b"".join(body) if body is not None and not isinstance(body, bytes) else (body or b"")
        with self.lock:
            self.calls.append((method, path + ("?" + parts.query if parts.query else "")))
            queue = self.faults.get(method) or []
            fault = queue.pop(0) if queue else None
        if fault == "drop":
            raise ConnectionResetError("dropped")
        if isinstance(fault, int):
            return FakeResponse(fault, b'{"errors":[{"code":"X","message":"injected"}]}',
                                {"Retry-After": "2"} if fault == 429 else {})
        m = re.fullmatch(r"/v2/(.+)/(blobs|manifests)/(.*)", path)
        assert m, path
        repo, kind, rest = m.groups()
        if kind == "manifests":
            if method == "PUT":
                for d in re.findall(r'"digest":"(sha256:[0-9a-f]+)"', data.decode()):
                    if d not in self.blobs:
                        return FakeResponse(400, b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
                self.manifests[rest] = (data, kw["headers"]["Content-Type"])
                self.manifests[str(sha256_bytes(data))] = self.manifests[rest]
                return FakeResponse(201, b"", {"Docker-Content-Digest": str(sha256_bytes(data))})
            return FakeResponse(200 if rest in self.manifests else 404)
        if method == "HEAD":
            return FakeResponse(200 if rest in self.blobs else 404)
        if method == "POST":
            if "mount" in query and not self.refuse_mount and query["mount"][0] in self.blobs:
                return FakeResponse(201)
            with self.lock:
                self.n += 1
                uid = f"u{self.n}"
            self.uploads[uid] = bytearray()
            return FakeResponse(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=s"})
        uid = rest.removeprefix("uploads/")
        if uid not in self.uploads:
            return FakeResponse(404, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}')
        have = self.uploads[uid]
        if method == "GET":
            return FakeResponse(204, b"", {"Range": f"0-{max(len(have) - 1, 0)}",
                                           "Location": f"/v2/{repo}/blobs/uploads/{uid}"})
        if method == "PATCH":
            start = int(kw["headers"]["Content-Range"].split("-")[0])
            if start != len(have):
                return FakeResponse(416)
            if fault == "half":
                have.extend(data[:len(data) // 2])
                raise ConnectionResetError("cut mid-chunk")
            have.extend(data)
            return FakeResponse(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{uid}?o={len(have)}",
                                           "Range": f"0-{len(have) - 1}"})
        if method == "PUT":
            if fault == "half":
                raise ConnectionResetError("cut")
            have.extend(data)
            digest = query["digest"][0]
            if str(sha256_bytes(bytes(have))) != digest:
                return FakeResponse(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
            self.blobs[digest] = bytes(have)
            del self.uploads[uid]
            return FakeResponse(201, b"", {"Docker-Content-Digest": digest})
        raise AssertionError((method, path))


def make_image(tmp_path, sizes=(100, 5000), media="oci"):
    layers = []
    diff_ids = []
    for i, size in enumerate(sizes):
        data = bytes((i * 7 + j) % 251 for j in range(size))
        path = tmp_path / f"layer{i}"
        path.write_bytes(data)
        layers.append((Descriptor(MediaType.OCI_LAYER, sha256_bytes(data), size), path))
        diff_ids.append(str(sha256_bytes(data)))
    config = ImageConfig.from_json({"architecture": "amd64", "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    return build_image(config, layers, blob_dir=tmp_path / "blobs", media=media)


def push(mem, image, names=("r.example/team/app:v1",), sleeps=None, **kw):
    sleeps = [] if sleeps is None else sleeps
    reg = Registry("r.example", transport=mem, credentials=None, sleep=sleeps.append)
    return push_image(image, [ImageRef.parse(n) for n in names], registry_for=lambda host: reg, **kw)


def test_push_uploads_blobs_then_manifest_under_every_tag(tmp_path):
    image = make_image(tmp_path)
    mem = MemRegistry()
    [result] = push(mem, image, ("r.example/team/app:v1", "r.example/team/app:latest"))
    assert result.digest == image.manifest_digest
    assert result.names == ("r.example/team/app:v1", "r.example/team/app:latest")
    assert {b.how for b in result.blobs} == {"uploaded"}
    assert mem.blobs[str(image.config_digest)] == image.config_bytes
    assert mem.manifests["v1"] == (image.manifest_bytes, MediaType.OCI_MANIFEST)
    assert mem.manifests["latest"][0] == image.manifest_bytes
    first_manifest = next(i for i, c in enumerate(mem.calls) if "/manifests/" in c[1])
    last_blob = max(i for i, c in enumerate(mem.calls) if "/blobs/" in c[1])
    assert first_manifest > last_blob
    # a second push only asks
    mem.calls.clear()
    [again] = push(mem, image)
    assert {b.how for b in again.blobs} == {"exists"}
    assert [m for m, _ in mem.calls].count("POST") == 0


def test_docker_media_types_are_pushed_as_they_are(tmp_path):
    image = make_image(tmp_path, media="docker")
    mem = MemRegistry()
    push(mem, image)
    data, media = mem.manifests["v1"]
    assert media == MediaType.DOCKER_MANIFEST
    assert json.loads(data)["layers"][0]["mediaType"] == MediaType.DOCKER_LAYER


def test_mount_from_a_known_repository_and_fallback_when_refused(tmp_path):
    image = make_image(tmp_path)
    mem = MemRegistry()
    push(mem, image, ("r.example/base/img:1",))
    # This fake keeps blobs for all repositories at once; make team/ look empty to HEAD.
    mem2 = MemRegistry(blobs=dict(mem.blobs))
    orig = mem2.request

    def head_misses(method: str, url: str, **kw: Any) -> FakeResponse:
        if method == "HEAD" and "/blobs/" in url and "/team/" in url:
            mem2.calls.append((method, url))
            return FakeResponse(404)
        return orig(method, url, **kw)

    mem2.request = head_misses  # type: ignore[method-assign]
    recorded: list[tuple[Any, str]] = []
    [mounted] = push(mem2, image, sources=lambda d: ["other.example/base/img", "r.example/base/img"],
                     record=lambda d, w: recorded.append((d, w)))
    assert {b.how for b in mounted.blobs} == {"mounted"}
    assert any("mount=" in u and "from=base/img" in u for _, u in mem2.calls)
    mem2.refuse_mount = True
    [refused] = push(mem2, image, ("r.example/team/app:v2",), sources=lambda d: ["r.example/base/img"])
    assert {b.how for b in refused.blobs} == {"uploaded"}
    # the upload went into the session the refused mount opened: no plain POST after it
    posts = [u for m, u in mem2.calls if m == "POST"]
    assert posts and all("mount=" in u for u in posts[-2:])
    assert {w for _, w in recorded} == {"r.example/team/app"}


def test_chunked_upload_resumes_from_range_after_a_cut_mid_chunk(tmp_path):
    image = make_image(tmp_path, sizes=(10_000,))
    mem = MemRegistry(faults={"PATCH": [None, "half"]})
    [result] = push(mem, image, chunk_size=3000)
    layer = image.layers[0]
    assert mem.blobs[str(layer.digest)] == (tmp_path / "layer0").read_bytes()
    patches = [u for m, u in mem.calls if m == "PATCH"]
    gets = [u for m, u in mem.calls if m == "GET"]
    assert len(gets) == 1  # one status request, then the same session goes on
    assert len({u.split("?")[0] for u in patches}) == 1
    # chunks 0-2999, 3000-5999 (cut after 1500 bytes), then from 4500: 4500-7499, 7500-9999
    assert len(patches) == 4
    assert [m for m, u in mem.calls].count("POST") == 2  # config and layer: no fresh start
    assert result.blobs[-1].how == "uploaded"


def test_range_header():
    assert _range_end("0-4999") == 5000
    assert _range_end("0-0") == 0
    assert _range_end("") == 0


def test_retries_honour_retry_after_then_succeed(tmp_path):
    image = make_image(tmp_path)
    mem = MemRegistry(faults={"PUT": [429, 503, "drop"], "HEAD": [500]})
    sleeps: list[float] = []
    push(mem, image, sleeps=sleeps, jobs=1)
    assert 2.0 in sleeps
    assert mem.manifests["v1"][0] == image.manifest_bytes


def test_failure_after_retries_names_registry_blob_and_status_and_pushes_no_manifest(tmp_path):
    image = make_image(tmp_path, sizes=(100,))
    mem = MemRegistry(faults={"PUT": [500] * 50})
    with pytest.raises(RegistryError) as err:
        push(mem, image, jobs=1)
    text = err.value.render()
    assert "r.example/team/app" in text and "HTTP 500" in text
    assert re.search(r"blob sha256:[0-9a-f]{64}", text)
    assert not mem.manifests


def test_manifest_refused_is_an_error_not_a_success(tmp_path):
    image = make_image(tmp_path, sizes=(100,))
    mem = MemRegistry(faults={"PUT": [None, None, 400]})
    with pytest.raises(RegistryError, match="manifest v1: the registry answered HTTP 400"):
        push(mem, image, jobs=1)


def test_credentials_never_appear_in_errors(tmp_path):
    image = make_image(tmp_path, sizes=(100,))

    class Denying:
        def request(self, method: str, url: str, **kw: Any) -> FakeResponse:
            if "/token" in url:
                return FakeResponse(401, b"no")
            return FakeResponse(401, b"", {"WWW-Authenticate": 'Bearer realm="https://a/token"'})

    reg = Registry("r.example", transport=Denying(), credentials=Credentials("me", "hunter2-secret"))
    with pytest.raises(RegistryError) as err:
        push_image(image, [ImageRef.parse("r.example/x:1")], registry_for=lambda h: reg)
    assert "hunter2" not in err.value.render() and "me:" not in err.value.render()
