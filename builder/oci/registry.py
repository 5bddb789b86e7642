"""A registry client (distribution-spec v2): manifests and indexes resolved to a platform, blobs
streamed to disk and verified; and the calls a push makes (``blob_exists``, ``mount_blob``,
``start_upload``, ``put_manifest``, the raw ``send``), used by builder.oci.push.

Docker's conventions: a host with a folder in /etc/docker/certs.d (``$PYBUILD_CERTS_D`` in
tests) speaks TLS verified against the ``*.crt`` CAs there, with the ``*.cert``/``*.key``
client pair; otherwise loopback registries (localhost, 127.0.0.0/8, ::1) speak plain HTTP;
registries named insecure get TLS without verification, or plain HTTP when TLS fails;
everything else HTTPS verified against the system CAs. 429, 5xx and connection errors are
retried with a bounded backoff that honours Retry-After. Errors name the registry, the
repository and the HTTP status, never a credential.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
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

__all__ = [
    "MANIFEST_ACCEPT",
    "Registry",
    "ResolvedImage",
    "TLSSettings",
    "TransientError",
    "certs_dir",
    "first_answer",
    "is_loopback_host",
    "pull_sources",
    "resolve_for_pull",
    "tls_settings",
]

MANIFEST_ACCEPT = (f"{MediaType.OCI_INDEX}, {MediaType.DOCKER_MANIFEST_LIST}, "
                   f"{MediaType.OCI_MANIFEST}, {MediaType.DOCKER_MANIFEST}")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_PUSH = ("pull", "push")
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
                 attempts: int = 4, max_backoff: float | None = None, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, pool: int = 8) -> None:
        if transport is None:
            import requests
            from requests.adapters import HTTPAdapter

            transport = requests.Session()
            adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool, 2))
            transport.mount("https://", adapter)
            transport.mount("http://", adapter)
        from builder.oci.hosts import registry_settings

        self.host = host
        conf = registry_settings(host)  # buildkitd.toml's [registry."HOST"], daemon.json
        insecure = insecure or host in set(insecure_registries) or bool(conf.insecure)
        self.tls = tls_settings(host, extra_cas=conf.ca, keypair=conf.keypair)
        # An insecure registry is tried over TLS first (unverified), then plain HTTP, as docker does.
        self._probe_scheme = insecure and self.tls is None and conf.http is not False
        http = is_loopback_host(host) if conf.http is None else conf.http
        plain = self.tls is None and (http or self._probe_scheme)
        self.base = f"{'http' if plain else 'https'}://{host}/v2/"
        self.verify: bool | str = False if insecure and self.tls is None else (
            self.tls.verify if self.tls else True)
        self.client_cert = self.tls.cert if self.tls else None
        self.transport = transport
        # credentials=True: look them up in docker's/podman's config; None/False: anonymous.
        creds = load_credentials(host) if credentials is True else credentials or None
        self.auth = Authenticator(host, transport, creds, timeout=timeout)
        if max_backoff is None:  # $PYBUILD_REGISTRY_MAX_BACKOFF caps every wait (tests use a small one)
            max_backoff = float(os.environ.get("PYBUILD_REGISTRY_MAX_BACKOFF") or 10.0)
        self.attempts, self.max_backoff, self.timeout, self.sleep = attempts, max_backoff, timeout, sleep
        self._lock = threading.Lock()

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
        top = digest if isinstance(parsed, Index) else None
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
        return ResolvedImage(digest, parsed, data, config, config_bytes, resolved_digest=top)

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

    def check_login(self) -> None:
        """Verify the credentials as ``docker login`` does: GET /v2/, answer the challenge
        (a token without scope, or basic auth), expect 200."""
        self._choose_scheme()
        what = f"login to {self.host}"
        for attempt in range(2):
            headers = {}
            auth = self.auth.header("")
            if auth:
                headers["Authorization"] = auth
            try:
                resp = self.transport.request("GET", self.base, headers=headers, timeout=self.timeout,
                                              **self._tls_kwargs(self.base))
            except OSError as exc:
                raise RegistryError(f"{what} failed: cannot reach the registry ({_describe(exc)})",
                                    hint=self._scheme_hint()) from None
            resp.close()
            if resp.status_code == 200:
                return
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status_code == 401 and challenge and attempt == 0:
                self.auth.answer(challenge, "")
                continue
            if resp.status_code == 401:
                raise RegistryError(f"{what} failed: the registry refused the username or "
                                    "password (HTTP 401)")
            raise RegistryError(f"{what} failed: the registry answered HTTP {resp.status_code}")

    # ---------------------------------------------------------------------- pushing

    def send(self, method: str, ref: ImageRef, *, what: str, path: str = "", url: str | None = None,
             **kw: Any) -> Response:
        """A raw registry call (auth, TLS, retries) for the push protocol."""
        return self._request(method, ref, path, what=what, url=url, **kw)

    def blob_exists(self, ref: ImageRef, digest: Digest) -> bool:
        resp = self._request("HEAD", ref, f"blobs/{digest}", what=f"blob {digest}",
                             actions=_PUSH, ok=(200, 404))
        resp.close()
        return resp.status_code == 200

    def mount_blob(self, ref: ImageRef, digest: Digest, source: str) -> str | None:
        """Ask for ``digest`` to be mounted from repository ``source``; None when mounted, else
        the Location of the upload the registry opened instead (a refused mount)."""
        resp = self._request("POST", ref, f"blobs/uploads/?mount={digest}&from={source}",
                             what=f"blob {digest} (mount from {source})", actions=_PUSH,
                             ok=(201, 202), headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code == 201:
            return None
        return self.location(ref, resp, f"blob {digest}")

    def start_upload(self, ref: ImageRef, digest: Digest) -> str:
        resp = self._request("POST", ref, "blobs/uploads/", what=f"blob {digest}", actions=_PUSH,
                             ok=(202,), headers={"Content-Length": "0"})
        resp.close()
        return self.location(ref, resp, f"blob {digest}")

    def location(self, ref: ImageRef, resp: Response, what: str) -> str:
        from urllib.parse import urljoin

        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self._where(ref)}: {what}: the registry answered HTTP "
                                f"{resp.status_code} without a Location for the upload")
        return urljoin(self.base, loc)

    def put_manifest(self, ref: ImageRef, reference: str, data: bytes, media_type: str) -> Digest:
        digest = sha256_bytes(data)
        resp = self._request("PUT", ref, f"manifests/{reference}", what=f"manifest {reference}",
                             actions=_PUSH, ok=(200, 201, 202), data=data,
                             headers={"Content-Type": media_type})
        resp.close()
        served = resp.headers.get("Docker-Content-Digest")
        if served and served.startswith("sha256:") and served != str(digest):
            raise RegistryError(f"{self._where(ref)}: the registry stored manifest {reference} as "
                                f"{served}, not {digest}")
        return digest

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
                 ok: tuple[int, ...] = (200,), url: str | None = None,
                 attempts: int | None = None) -> Response:
        """One registry call with auth and retries; a non-``ok`` status becomes a RegistryError.
        ``data`` may be a callable giving a fresh body for each attempt (a stream is read once);
        ``url`` (an upload's Location) replaces ``path``; ``attempts=1`` leaves retrying to the
        caller (an upload that must resume rather than resend)."""
        self._choose_scheme()
        scope = f"repository:{ref.repository}:{','.join(actions)}"
        target = url or self._url(ref, path)
        limit = attempts or self.attempts
        answered = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self.auth.header(scope)
            if auth:
                hdrs["Authorization"] = auth
            body = data() if callable(data) else data
            try:
                resp = self.transport.request(method, target, headers=hdrs, stream=stream, data=body,
                                              timeout=self.timeout, allow_redirects=True,
                                              **self._tls_kwargs(target))
            except OSError as exc:  # connection refused, reset, timeout, TLS failure
                attempt += 1
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # trying again will not help
                    raise RegistryError(f"{self.host}: {_describe(exc)}; {what} was not "
                                        "transferred", hint=self._scheme_hint()) from None
                if attempt >= limit:
                    raise TransientError(f"{self.host}: cannot reach the registry "
                                        f"({_describe(exc)}) after {attempt} attempts; {what} "
                                        "was not transferred", hint=self._scheme_hint()) from None
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
            if resp.status_code in _RETRY_STATUS:
                if attempt + 1 < limit:
                    attempt += 1
                    retry_after = resp.headers.get("Retry-After")
                    resp.close()
                    self.sleep(self._backoff(attempt - 1, retry_after))
                    continue
                err = self._status_error(ref, what, resp)
                raise TransientError(err.message, hint=err.hint,
                                     retry_after=resp.headers.get("Retry-After"))
            raise self._status_error(ref, what, resp)

    def _tls_kwargs(self, url: str) -> dict[str, Any]:
        if not url.startswith("https://"):
            return {}
        kw: dict[str, Any] = {"verify": self.verify}
        if self.client_cert:
            kw["cert"] = self.client_cert
        return kw

    def _choose_scheme(self) -> None:
        """For an insecure registry: TLS (unverified) when it answers over TLS, else plain HTTP."""
        if not self._probe_scheme:
            return
        with self._lock:
            if not self._probe_scheme:
                return
            https = f"https://{self.host}/v2/"
            try:
                resp = self.transport.request("GET", https, headers={}, timeout=min(self.timeout, 10),
                                              verify=False)
                resp.close()
                self.base = https
            except OSError:
                self.base = f"http://{self.host}/v2/"
            self._probe_scheme = False

    def _status_error(self, ref: ImageRef, what: str, resp: Response) -> RegistryError:
        if resp.status_code == 400 and self.base.startswith("http://") and self._speaks_tls():
            resp.close()
            return RegistryError(f"{self.host} speaks TLS, not plain HTTP ({what})",
                                 hint=f"put its CA in {certs_dir() / self.host / 'ca.crt'}, or "
                                 f"use --insecure-registry {self.host} to skip verification")
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

    def _speaks_tls(self) -> bool:
        """Whether a 400 to plain HTTP is Go's answer from a TLS port (a HEAD has no body)."""
        try:
            resp = self.transport.request("GET", self.base, headers={}, timeout=10)
        except OSError:
            return False
        try:
            return resp.status_code == 400 and b"HTTPS server" in resp.content[:512]
        finally:
            resp.close()

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff)
        return min(0.5 * 2 ** attempt, self.max_backoff)

    def _scheme_hint(self) -> str | None:
        if self.base.startswith("https://"):
            return (f"if {self.host} speaks plain HTTP or has its own CA, mark it with "
                    f"--insecure-registry {self.host}, or put its CA in "
                    f"{certs_dir() / self.host / 'ca.crt'}")
        return None


def pull_sources(ref: ImageRef, insecure_registries: Iterable[str] = ()
                 ) -> Iterator[tuple[Registry, ImageRef, str | None]]:
    """The places a pull of ``ref`` tries, in order (``builder.oci.hosts.pull_places``): the
    mirrors, then the registry itself; each as (client, the reference as that place names
    it, the mirror's name or None for the registry)."""
    import dataclasses

    from builder.oci.hosts import pull_places

    insecure_registries = tuple(insecure_registries)
    for place in pull_places(ref.registry, ref.repository, by_digest=ref.digest is not None):
        there = ref if (place.host, place.repository) == (ref.registry, ref.repository) else \
            dataclasses.replace(ref, registry=place.host, repository=place.repository)
        if place.mirror is None:
            yield (Registry(there.api_host, insecure=place.insecure,
                            insecure_registries=insecure_registries), there, None)
        else:  # a mirror that does not answer is passed over quickly: the registry is still there
            yield (Registry(place.host, insecure=place.insecure, insecure_registries=insecure_registries,
                            attempts=2, max_backoff=1.0), there, place.mirror)


def first_answer(ref: ImageRef, ask: Callable[[Registry, ImageRef], Any], *,
                 insecure_registries: Iterable[str] = ()) -> tuple[Registry, ImageRef, Any]:
    """``ask(registry, reference)`` of each place a pull tries (``pull_sources``) until one
    answers, as BuildKit's resolver does. When every place fails, the registry's own error
    is raised, with what each mirror answered."""
    failures = []
    for registry, there, mirror in pull_sources(ref, insecure_registries):
        try:
            return registry, there, ask(registry, there)
        except RegistryError as exc:
            if mirror is None:
                if failures:
                    exc.message = f"{exc.message} (tried first: {'; '.join(failures)})"
                    exc.args = (exc.message,)
                raise
            host = mirror.split("/")[0]
            failures.append(f"mirror {mirror}: {exc.message.removeprefix(f'{host}: ')}")
    raise AssertionError("pull_sources ends with the registry itself")


def resolve_for_pull(ref: ImageRef, *, insecure_registries: Iterable[str] = (),
                     platform: Platform | None = None) -> tuple[Registry, ImageRef, ResolvedImage]:
    """Resolve ``ref`` for a pull (``first_answer``): the registry that answered, the
    reference as it names it (a mirror's path in front), to fetch the blobs with, and the
    image."""
    return first_answer(ref, lambda registry, there: registry.resolve(there, platform),
                        insecure_registries=insecure_registries)


@dataclass(frozen=True)
class TLSSettings:
    """What docker reads from certs.d/HOST: CAs to verify with, and a client certificate."""

    verify: bool | str                 # True: the system CAs; a path: a CA bundle
    cert: tuple[str, str] | None = None  # (certificate, key)


def certs_dir(env: Mapping[str, str] | None = None) -> Path:
    """docker's /etc/docker/certs.d, or $PYBUILD_CERTS_D (for tests and rootless setups)."""
    env = os.environ if env is None else env
    return Path(env.get("PYBUILD_CERTS_D") or "/etc/docker/certs.d")


_BUNDLES: dict[tuple[str, ...], str] = {}


def tls_settings(host: str, env: Mapping[str, str] | None = None, *, extra_cas: Iterable[str] = (),
                 keypair: tuple[str, str] | None = None) -> TLSSettings | None:
    """The TLS settings of certs.d/HOST (HOST with its port, as docker names the folder) and of
    buildkitd.toml's ``ca``/``keypair`` for it, or None when neither says anything. Several CAs
    are joined into one bundle."""
    folder = certs_dir(env) / host
    extra_cas = tuple(extra_cas)
    if not folder.is_dir() and not extra_cas and keypair is None:
        return None
    cas = sorted(str(p) for p in folder.glob("*.crt")) if folder.is_dir() else []
    for ca in extra_cas:
        if not Path(ca).is_file():
            raise RegistryError(f"the CA {ca} configured for {host} is not a file")
        cas.append(ca)
    cert = keypair
    for cert_file in sorted(folder.glob("*.cert")):
        key = cert_file.with_suffix(".key")
        if not key.is_file():
            raise RegistryError(f"{cert_file} has no matching key {key.name}",
                                hint=f"put the client key beside it in {folder}")
        cert = (str(cert_file), str(key))
    if not cas:
        return TLSSettings(True, cert)
    if len(cas) == 1:
        return TLSSettings(cas[0], cert)
    key_ = tuple(cas)
    if key_ not in _BUNDLES:
        fd, bundle = tempfile.mkstemp(prefix="pybuild-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as out:
            for ca in cas:
                out.write(Path(ca).read_bytes().rstrip(b"\n") + b"\n")
        _BUNDLES[key_] = bundle
    return TLSSettings(_BUNDLES[key_], cert)


def _describe(exc: BaseException) -> str:
    """A connection error's kind, and for TLS its reason (a certificate the CAs do not sign)."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"{type(exc).__name__}: the TLS certificate is not signed by a trusted CA"
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return f"{type(exc).__name__}: the registry does not speak TLS"
    return type(exc).__name__


class TransientError(RegistryError):
    """A failure worth trying again (a connection error, 429, 5xx) that outlasted the retries
    it was given; an upload resumes or restarts on it."""

    def __init__(self, message: str, *, hint: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


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
