"""Registry authentication: WWW-Authenticate challenges, bearer tokens, basic auth, and the
credentials ``docker login`` leaves in ~/.docker/config.json (or $DOCKER_CONFIG/config.json).

Tokens are cached per scope (``repository:NAME:pull``; push will ask for ``pull,push``).
Nothing here ever puts a secret into an exception message or a repr.
"""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from builder.errors import RegistryError

__all__ = [
    "Authenticator",
    "Challenge",
    "Credentials",
    "Response",
    "Transport",
    "docker_config_path",
    "load_credentials",
    "parse_challenges",
]

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


class Response(Protocol):
    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def iter_content(self, chunk_size: int) -> Any: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """The one-method seam the registry client talks through: a ``requests.Session`` fits."""

    def request(self, method: str, url: str, **kwargs: Any) -> Response: ...


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    scheme: str                 # lower-case: "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (RFC 7235): schemes each followed by ``k=v`` or
    ``k="quoted, with commas"`` parameters."""
    parsed: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " ,":
            i += 1
        start = i
        while i < n and header[i] not in " ,=":
            i += 1
        token = header[start:i]
        if not token:
            break
        if i < n and header[i] == "=" and parsed:  # a parameter of the current challenge
            i += 1
            value: list[str] = []
            if i < n and header[i] == '"':
                i += 1
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(header[i])
                    i += 1
                i += 1
            else:
                while i < n and header[i] not in " ,":
                    value.append(header[i])
                    i += 1
            parsed[-1][1][token.lower()] = "".join(value)
        else:
            parsed.append((token.lower(), {}))
    return [Challenge(scheme, params) for scheme, params in parsed]


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _keys_for(host: str) -> list[str]:
    if host in _HUB_HOSTS:
        return [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def load_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``host`` from docker's config.json ``auths`` (the base64 ``auth`` field,
    or ``username``/``password``). Credential helpers are not run."""
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read docker credentials from {path}: {exc}") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _keys_for(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise RegistryError(f"{path}: the auth entry for {key} is not base64 user:password")
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password", "")))
    return None


class Authenticator:
    """Answers a registry's 401 challenges; caches bearer tokens per scope until they expire."""

    def __init__(self, host: str, transport: Transport, credentials: Credentials | None,
                 *, timeout: float = 30.0) -> None:
        self.host = host
        self.transport = transport
        self.credentials = credentials
        self.timeout = timeout
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False  # the registry asked for basic auth once: send it up front

    def header(self, scope: str) -> str | None:
        """An Authorization value to send before any challenge, if one is known."""
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        if self._basic and self.credentials:
            return self.credentials.basic_header()
        return None

    def answer(self, www_authenticate: str, scope: str) -> str:
        """The Authorization value answering a 401's challenge (fetching a token if bearer)."""
        challenges = parse_challenges(www_authenticate)
        for ch in challenges:
            if ch.scheme == "bearer" and ch.params.get("realm"):
                return self._token(ch, scope)
        for ch in challenges:
            if ch.scheme == "basic":
                if not self.credentials:
                    raise RegistryError(f"{self.host} requires a login (basic auth) and no "
                                        "credentials were found",
                                        hint=f"run `docker login {self.host}` or add it to "
                                        f"{docker_config_path()}")
                self._basic = True
                return self.credentials.basic_header()
        raise RegistryError(f"{self.host} answered 401 with an authentication challenge pybuild "
                            f"does not support: {www_authenticate[:200]!r}")

    def _token(self, ch: Challenge, scope: str) -> str:
        params = {"service": ch.params["service"]} if ch.params.get("service") else {}
        params["scope"] = scope
        realm = ch.params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        headers = {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        try:
            resp = self.transport.request("GET", url, headers=headers, timeout=self.timeout)
        except OSError as exc:  # requests' errors derive from IOError
            raise RegistryError(f"{self.host}: cannot reach the token service at "
                                f"{realm}: {type(exc).__name__}") from None
        try:
            if resp.status_code != 200:
                who = "with the stored credentials" if self.credentials else "anonymously"
                raise RegistryError(f"{self.host}: the token service {realm} refused {scope} "
                                    f"{who} (HTTP {resp.status_code})",
                                    hint=f"check `docker login {self.host}`")
            try:
                body = json.loads(resp.content)
                token = body.get("token") or body.get("access_token")
                expires = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token = None
            if not isinstance(token, str) or not token:
                raise RegistryError(f"{self.host}: the token service {realm} sent no token")
        finally:
            resp.close()
        value = f"Bearer {token}"
        # Renew a little early so a long pull does not send a token that expires in flight.
        self._tokens[scope] = (value, time.monotonic() + max(expires - 10, 5))
        return value
