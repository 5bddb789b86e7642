"""Pushing an image to a registry, as the distribution spec and the real registries want it.

For each repository named by the targets: every blob (config and layers) is checked with HEAD
and skipped when the registry has it; a blob known to live in another repository of the same
registry is mounted from there (``POST ?mount=&from=``), and a refused mount (202) becomes an
upload in the session the registry opened; small blobs go up in one PUT, large ones in PATCH
chunks with ``Content-Range``, resuming from the registry's ``Range`` after a failure. Blobs go
up several at a time; the manifest goes last, once per tag, only after every blob is there, and
its digest is checked with a final HEAD. Nothing is reported as pushed that is not.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from builder.digest import Digest
from builder.errors import RegistryError
from builder.oci.image import ImageSpec
from builder.oci.registry import Registry, TransientError
from builder.oci.types import Descriptor

if TYPE_CHECKING:
    from builder.reference import ImageRef

__all__ = ["DEFAULT_CHUNK", "BlobPush", "PushResult", "push_image"]

DEFAULT_CHUNK = 16 << 20  # blobs this large or larger go up in PATCH chunks of this size
_OCTET = "application/octet-stream"


@dataclass(frozen=True)
class BlobPush:
    """How one blob reached the registry in a push."""

    digest: Digest
    size: int
    how: str  # "exists" | "mounted" | "uploaded"
    source: str | None = None  # the repository a mounted blob came from


@dataclass(frozen=True)
class PushResult:
    """What a push sent: the names, the manifest digest and the blobs."""

    names: tuple[str, ...]      # every name pushed (registry/repository:tag)
    digest: Digest              # the manifest digest
    blobs: tuple[BlobPush, ...]


Report = Callable[[str], None]


def push_image(image: ImageSpec, targets: Sequence[ImageRef], *,
               registry_for: Callable[[str], Registry],
               sources: Callable[[Digest], Sequence[str]] = lambda d: (),
               record: Callable[[Digest, str], None] = lambda d, where: None,
               chunk_size: int = DEFAULT_CHUNK, jobs: int = 4,
               report: Report = lambda line: None) -> list[PushResult]:
    """Push ``image`` under every target name. ``registry_for(api_host)`` gives the client of a
    registry; ``sources(digest)`` the ``host/repository`` places a blob is known to be in (for
    cross-repository mounts); ``record(digest, host/repository)`` is told where a blob now is."""
    by_repo: dict[tuple[str, str], list[ImageRef]] = {}
    for ref in targets:
        by_repo.setdefault((ref.api_host, ref.repository), []).append(ref)
    results = []
    for (host, _repo), refs in by_repo.items():
        registry = registry_for(host)
        results.append(_push_repository(registry, image, refs, sources=sources, record=record,
                                        chunk_size=chunk_size, jobs=jobs, report=report))
    return results


def _push_repository(registry: Registry, image: ImageSpec, refs: Sequence[ImageRef], *,
                     sources: Callable[[Digest], Sequence[str]], record: Callable[[Digest, str], None],
                     chunk_size: int, jobs: int, report: Report) -> PushResult:
    ref = refs[0]
    where = f"{registry.host}/{ref.repository}"
    blobs = list(image.blobs())
    pusher = _BlobPusher(registry, ref, chunk_size=chunk_size, report=report)
    done: list[BlobPush] = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(blobs))),
                              thread_name_prefix="push")
    try:
        futures = [pool.submit(pusher.push, desc, payload,
                               [s for s in sources(desc.digest) if s != where])
                   for desc, payload in blobs]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f in finished and f.exception() is not None:
                pusher.cancel.set()
                raise f.exception()  # type: ignore[misc]
        done = [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for blob in done:
        record(blob.digest, where)
    media_type = image.manifest.media_type
    names = []
    for target in refs:
        reference = target.tag or str(target.digest)
        if target.digest is not None and target.digest != image.manifest_digest:
            raise RegistryError(f"cannot push to {target}: the image's digest is "
                                f"{image.manifest_digest}")
        registry.put_manifest(target, reference, image.manifest_bytes, media_type)
        names.append(f"{registry.host}/{target.repository}:{reference}")
    # The registry says it has the manifest under its digest: only then is it pushed.
    resp = registry.send("HEAD", ref, path=f"manifests/{image.manifest_digest}",
                         what=f"manifest {image.manifest_digest}", ok=(200,),
                         headers={"Accept": media_type}, actions=("pull", "push"))
    resp.close()
    return PushResult(tuple(names), image.manifest_digest, tuple(done))


class _Body:
    """``length`` bytes of a file from ``offset`` (or of bytes), streamed with a known length."""

    def __init__(self, payload: bytes | Path, offset: int, length: int) -> None:
        self.payload, self.offset, self.length = payload, offset, length
        self.left = length
        self._f: Any = None

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        if isinstance(self.payload, bytes):
            start = self.offset + self.length - self.left
            data = self.payload[start:start + n]
        else:
            if self._f is None:
                self._f = open(self.payload, "rb")  # noqa: SIM115 (closed by close())
                self._f.seek(self.offset)
            data = self._f.read(n)
        self.left -= len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1 << 20):
            yield chunk

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


@dataclass
class _Session:
    """An upload in progress: where to send the next request, and how much the registry has."""

    location: str | None
    offset: int


class _BlobPusher:
    def __init__(self, registry: Registry, ref: ImageRef, *, chunk_size: int, report: Report) -> None:
        self.registry, self.ref, self.chunk_size, self.report = registry, ref, chunk_size, report
        self.cancel = threading.Event()
        # A blob gets this many fresh starts or resumes after transient failures.
        self.attempts = registry.attempts + 2

    def push(self, desc: Descriptor, payload: bytes | Path, sources: Sequence[str]) -> BlobPush:
        digest = desc.digest
        size = len(payload) if isinstance(payload, bytes) else _size(payload, desc)
        if size != desc.size:
            raise RegistryError(f"blob {digest} is {size} bytes but the manifest says {desc.size}; "
                                "nothing was pushed")
        if self.registry.blob_exists(self.ref, digest):
            self.report(f"{digest.short}: already in {self.registry.host}/{self.ref.repository}")
            return BlobPush(digest, size, "exists")
        location = None
        for source in sources:
            host, _, repo = source.partition("/")
            if host != self.registry.host or not repo:
                continue
            location = self.registry.mount_blob(self.ref, digest, repo)
            if location is None:
                self.report(f"{digest.short}: mounted from {repo}")
                return BlobPush(digest, size, "mounted", repo)
            break  # refused: upload into the session the registry opened
        self._upload(desc, payload, size, location)
        self.report(f"{digest.short}: pushed {size} bytes")
        return BlobPush(digest, size, "uploaded")

    def _upload(self, desc: Descriptor, payload: bytes | Path, size: int,
                location: str | None) -> None:
        failures = 0
        state = _Session(location, 0)
        while True:
            if self.cancel.is_set():
                raise RegistryError(f"push of blob {desc.digest} cancelled")
            try:
                if state.location is None:
                    state.location, state.offset = self.registry.start_upload(self.ref, desc.digest), 0
                if size < self.chunk_size:
                    self._put(state.location, desc.digest, payload, 0, size)
                else:
                    self._chunks(state, desc.digest, payload, size)
                    self._put(state.location, desc.digest, payload, size, 0)
                return
            except TransientError as exc:
                failures += 1
                if failures >= self.attempts:
                    raise RegistryError(f"{self._where()}: blob {desc.digest} was not pushed: "
                                        f"{exc.message}", hint=exc.hint) from None
                self.registry.sleep(self.registry._backoff(failures - 1, exc.retry_after))
                if self.registry.blob_exists(self.ref, desc.digest):
                    return  # the last request did land; only its answer was lost
                if size < self.chunk_size:
                    state.location = None  # a half-sent PUT cannot be continued: start afresh
                else:
                    state.location, state.offset = self._status(state.location, desc.digest)

    def _put(self, location: str, digest: Digest, payload: bytes | Path, offset: int,
             length: int) -> None:
        body = _Body(payload, offset, length)
        try:
            resp = self.registry.send("PUT", self.ref, url=_with_query(location, digest=str(digest)),
                                      what=f"blob {digest}", data=body, ok=(201, 204),
                                      actions=("pull", "push"), attempts=1,
                                      headers={"Content-Type": _OCTET, "Content-Length": str(length)})
        finally:
            body.close()
        resp.close()
        served = resp.headers.get("Docker-Content-Digest")
        if served and served != str(digest):
            raise RegistryError(f"{self._where()}: blob {digest} was stored as {served}")

    def _chunks(self, state: _Session, digest: Digest, payload: bytes | Path, size: int) -> None:
        """PATCH the rest of the blob from ``state.offset``; ``state`` follows every answer, so
        after a failure it holds the last Location the registry gave."""
        while state.offset < size:
            if self.cancel.is_set():
                raise RegistryError(f"push of blob {digest} cancelled")
            assert state.location is not None
            offset, n = state.offset, min(self.chunk_size, size - state.offset)
            body = _Body(payload, offset, n)
            try:
                resp = self.registry.send(
                    "PATCH", self.ref, url=state.location, what=f"blob {digest} (bytes {offset}-"
                    f"{offset + n - 1})", data=body, ok=(202,), actions=("pull", "push"), attempts=1,
                    headers={"Content-Type": _OCTET, "Content-Range": f"{offset}-{offset + n - 1}",
                             "Content-Length": str(n)})
            finally:
                body.close()
            resp.close()
            state.location = self.registry.location(self.ref, resp, f"blob {digest}")
            state.offset = offset + n

    def _status(self, location: str | None, digest: Digest) -> tuple[str | None, int]:
        """Where a broken chunked upload stands: (its Location, the bytes the registry has);
        (None, 0) when the session is gone and the upload must start again."""
        if location is None:
            return None, 0
        try:
            resp = self.registry.send("GET", self.ref, url=location, what=f"blob {digest} (upload "
                                      "status)", ok=(204,), actions=("pull", "push"))
        except TransientError:
            raise
        except RegistryError:
            return None, 0
        resp.close()
        have = _range_end(resp.headers.get("Range", ""))
        self.report(f"{digest.short}: resuming at byte {have}")
        return self.registry.location(self.ref, resp, f"blob {digest}"), have

    def _where(self) -> str:
        return f"{self.registry.host}/{self.ref.repository}"


def _range_end(value: str) -> int:
    """Bytes received, from a ``Range: 0-N`` header (inclusive end; ``0-0`` from a registry that
    has nothing is read as nothing, as docker's client does)."""
    _, _, end = value.partition("-")
    try:
        last = int(end)
    except ValueError:
        return 0
    return last + 1 if last > 0 else 0


def _size(path: Path, desc: Descriptor) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        raise RegistryError(f"blob {desc.digest} is missing from the local store ({path})",
                            hint="build or pull the image again") from None
