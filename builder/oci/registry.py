"""A registry client (distribution-spec v2) for pulling: manifests and indexes resolved to a
platform, blobs streamed to disk and verified. Push will add methods on the same request path
(``_request`` with ``actions=("pull", "push")``).

Docker's conventions: loopback registries (localhost, 127.0.0.0/8, ::1) speak plain HTTP, as do
registries named insecure; everything else HTTPS. 429, 5xx and connection errors are retried
with a bounded backoff that honours Retry-After. Errors name the registry, the repository and
the HTTP status, never a credential.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from builder.digest import Digest, sha256_bytes
from builder.errors import RegistryError
from builder.oci.auth import Authenticator, Credentials, Response, Transport, load_credentials
from builder.oci.image import ResolvedImage
from builder.oci.types import (
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    MediaType,
    Platform,
    decode,
    host_platform,
    parse_manifest_or_index,
)

if TYPE_CHECKING:
    from builder.reference import ImageRef

__all__ = ["MANIFEST_ACCEPT", "Registry", "ResolvedImage", "is_loopback_host"]

MANIFEST_ACCEPT = (f"{MediaType.OCI_INDEX}, {MediaType.DOCKER_MANIFEST_LIST}, "
                   f"{MediaType.OCI_MANIFEST}, {MediaType.DOCKER_MANIFEST}")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_MANIFEST = 4 << 20  # the distribution spec's limit; configs are held to it too
CHUNK = 1 << 20


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1, with or without a port, as docker treats them."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]")[0]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Registry:
    """One registry host (``ref.api_host``, e.g. ``registry-1.docker.io`` or ``127.0.0.1:5000``)."""

    def __init__(self, host: str, *, insecure: bool = False, transport: Transport | None = None,
                 credentials: Credentials | None | bool = True, insecure_registries: Iterable[str] = (),
                 attempts: int = 4, max_backoff: float = 10.0, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if transport is None:
            import requests

            transport = requests.Session()
        self.host = host
        plain = insecure or host in set(insecure_registries) or is_loopback_host(host)
        self.base = f"{'http' if plain else 'https'}://{host}/v2/"
        self.transport = transport
        # credentials=True: look them up in docker's config; None/False: anonymous.
        creds = load_credentials(host) if credentials is True else credentials or None
        self.auth = Authenticator(host, transport, creds, timeout=timeout)
        self.attempts, self.max_backoff, self.timeout, self.sleep = attempts, max_backoff, timeout, sleep

    # ------------------------------------------------------------------ reading images

    def resolve(self, ref: ImageRef, platform: Platform | None = None) -> ResolvedImage:
        """The manifest and config of ``ref`` for ``platform`` (default: this host), following
        an index or manifest list."""
        platform = platform or host_platform()
        reference = ref.manifest_reference
        data, media_type, digest = self.get_manifest(ref, reference)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"{self._where(ref)}: manifest {reference} has digest {digest}")
        parsed = self._parse(ref, data, media_type)
        for _ in range(4):  # an index of indexes is legal but rare; a bound stops a loop
            if not isinstance(parsed, Index):
                break
            desc = self._select(ref, parsed, platform, reference)
            data, media_type, digest = self.get_manifest(ref, str(desc.digest))
            if digest != desc.digest:
                raise RegistryError(f"{self._where(ref)}: manifest {desc.digest} has digest {digest}")
            parsed = self._parse(ref, data, media_type or desc.media_type)
        if isinstance(parsed, Index):
            raise RegistryError(f"{self._where(ref)}: image indexes nest too deeply")
        config_bytes = self.read_blob(ref, parsed.config)
        try:
            config = ImageConfig.from_json(decode(config_bytes, "image config"))
        except ImageFormatError as exc:
            raise RegistryError(f"{self._where(ref)}: {exc.message}") from None
        if len(config.diff_ids) != len(parsed.layers):
            raise RegistryError(f"{self._where(ref)}: manifest {digest.short} has "
                                f"{len(parsed.layers)} layers but its config lists "
                                f"{len(config.diff_ids)} diff ids")
        return ResolvedImage(digest, parsed, data, config, config_bytes)

    def get_manifest(self, ref: ImageRef, reference: str) -> tuple[bytes, str, Digest]:
        """(bytes, content type, digest) of a manifest or index, by tag or digest."""
        resp = self._request("GET", ref, f"manifests/{reference}",
                             headers={"Accept": MANIFEST_ACCEPT}, what=f"manifest {reference}")
        try:
            data = _read_limited(resp, _MAX_MANIFEST, f"{self._where(ref)}: manifest {reference}")
        finally:
            resp.close()
        digest = sha256_bytes(data)
        served = resp.headers.get("Docker-Content-Digest")
        if served and served.startswith("sha256:") and served != str(digest):
            raise RegistryError(f"{self._where(ref)}: manifest {reference} does not match the "
                                f"digest the registry announced ({served})")
        return data, resp.headers.get("Content-Type", ""), digest

    def read_blob(self, ref: ImageRef, desc: Descriptor) -> bytes:
        """A small blob (a config) in memory, verified against ``desc``."""
        if desc.size > _MAX_MANIFEST:
            raise RegistryError(f"{self._where(ref)}: blob {desc.digest} is too large to read "
                                f"into memory ({desc.size} bytes)")
        resp = self._request("GET", ref, f"blobs/{desc.digest}", what=f"blob {desc.digest}")
        try:
            data = _read_limited(resp, desc.size, f"{self._where(ref)}: blob {desc.digest}")
        finally:
            resp.close()
        self._verify(ref, desc, sha256_bytes(data), len(data))
        return data

    def fetch_blob(self, ref: ImageRef, desc: Descriptor, dest: str | Path) -> Path:
        """Stream blob ``desc`` to ``dest``: written aside, renamed only once its size and
        sha256 match; on a mismatch nothing is kept. Broken transfers are retried."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        last: Exception | None = None
        for attempt in range(self.attempts):
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
            try:
                try:
                    with os.fdopen(fd, "wb") as out:
                        digest, size = self._download(ref, desc, out)
                except _Transient as exc:
                    last = exc.__cause__ or exc
                    self.sleep(self._backoff(attempt, None))
                    continue
                self._verify(ref, desc, digest, size)
                os.replace(tmp, dest)
                return dest
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        raise RegistryError(f"{self._where(ref)}: blob {desc.digest} could not be downloaded "
                            f"after {self.attempts} attempts: {type(last).__name__}")

    # ---------------------------------------------------------------------- internals

    def _download(self, ref: ImageRef, desc: Descriptor, out: IO[bytes]) -> tuple[Digest, int]:
        resp = self._request("GET", ref, f"blobs/{desc.digest}", stream=True,
                             what=f"blob {desc.digest}")
        h, size = hashlib.sha256(), 0
        try:
            for chunk in resp.iter_content(CHUNK):
                size += len(chunk)
                if size > desc.size:  # never download more than the manifest promised
                    break
                h.update(chunk)
                out.write(chunk)
        except OSError as exc:  # requests' ChunkedEncodingError and friends are IOErrors
            raise _Transient() from exc
        finally:
            resp.close()
        return Digest.sha256(h.hexdigest()), size

    def _verify(self, ref: ImageRef, desc: Descriptor, digest: Digest, size: int) -> None:
        if size != desc.size:
            raise RegistryError(f"{self._where(ref)}: blob {desc.digest} is "
                                f"{'larger' if size > desc.size else 'smaller'} than the "
                                f"{desc.size} bytes its descriptor says; nothing was kept")
        if desc.digest.algorithm == "sha256" and digest != desc.digest:
            raise RegistryError(f"{self._where(ref)}: blob {desc.digest} does not match its "
                                f"digest (got {digest}); nothing was kept")

    def _parse(self, ref: ImageRef, data: bytes, media_type: str) -> Any:
        try:
            return parse_manifest_or_index(data, media_type)
        except ImageFormatError as exc:
            raise RegistryError(f"{self._where(ref)}: {exc.message}") from None

    def _select(self, ref: ImageRef, index: Index, platform: Platform, reference: str) -> Descriptor:
        try:
            return index.select(platform, f"{self._where(ref)}:{reference}")
        except ImageFormatError as exc:
            raise RegistryError(exc.message, hint="choose one with --platform") from None

    def _where(self, ref: ImageRef) -> str:
        return f"{self.host}/{ref.repository}"

    def _url(self, ref: ImageRef, path: str) -> str:
        return f"{self.base}{ref.repository}/{path}"

    def _request(self, method: str, ref: ImageRef, path: str, *, what: str,
                 headers: Mapping[str, str] | None = None, stream: bool = False,
                 actions: tuple[str, ...] = ("pull",), data: Any = None,
                 ok: tuple[int, ...] = (200,)) -> Response:
        """One registry call with auth and retries; a non-``ok`` status becomes a RegistryError."""
        scope = f"repository:{ref.repository}:{','.join(actions)}"
        url = self._url(ref, path)
        answered = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self.auth.header(scope)
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = self.transport.request(method, url, headers=hdrs, stream=stream, data=data,
                                              timeout=self.timeout, allow_redirects=True)
            except OSError as exc:  # connection refused, reset, timeout
                attempt += 1
                if attempt >= self.attempts:
                    raise RegistryError(f"{self.host}: cannot reach the registry "
                                        f"({type(exc).__name__}) after {attempt} attempts",
                                        hint=self._scheme_hint()) from None
                self.sleep(self._backoff(attempt - 1, None))
                continue
            if resp.status_code in ok:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status_code == 401 and challenge and not answered:
                resp.close()
                self.auth.answer(challenge, scope)
                answered = True
                continue
            if resp.status_code in _RETRY_STATUS and attempt + 1 < self.attempts:
                attempt += 1
                retry_after = resp.headers.get("Retry-After")
                resp.close()
                self.sleep(self._backoff(attempt - 1, retry_after))
                continue
            raise self._status_error(ref, what, resp)

    def _status_error(self, ref: ImageRef, what: str, resp: Response) -> RegistryError:
        detail = _error_detail(resp)
        resp.close()
        status = resp.status_code
        where = self._where(ref)
        if status == 404:
            return RegistryError(f"{where}: {what} not found (HTTP 404){detail}",
                                 hint="check the image name and tag")
        if status in (401, 403):
            return RegistryError(f"{where}: access to {what} denied (HTTP {status}){detail}",
                                 hint=f"run `docker login {self.host}` if the image is private")
        return RegistryError(f"{where}: {what}: the registry answered HTTP {status}{detail}")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff)
        return min(0.5 * 2 ** attempt, self.max_backoff)

    def _scheme_hint(self) -> str | None:
        if self.base.startswith("https://"):
            return f"if {self.host} speaks plain HTTP, mark it as an insecure registry"
        return None


class _Transient(Exception):
    """A transfer broke mid-stream; the caller retries it."""


def _read_limited(resp: Response, limit: int, what: str) -> bytes:
    data = resp.content
    if len(data) > limit:
        raise RegistryError(f"{what} is larger than {limit} bytes")
    return data


def _error_detail(resp: Response) -> str:
    """The registry's own words, from the distribution-spec error body, shortened."""
    try:
        body = json.loads(resp.content[:65536])
        errors = body.get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                         for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        return ""
    return f": {text[:300]}" if text else ""
