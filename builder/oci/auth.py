"""Registry authentication: WWW-Authenticate challenges, bearer tokens, basic auth, and the
credentials ``docker login`` leaves in ~/.docker/config.json (or $DOCKER_CONFIG/config.json):
``auths`` entries, ``credsStore`` and ``credHelpers`` run through the docker-credential-*
protocol; then podman's auth.json ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json). ``store_credentials``/``erase_credentials`` are login/logout.

Tokens are cached per scope (``repository:NAME:pull``; push will ask for ``pull,push``).
Nothing here ever puts a secret into an exception message or a repr.
"""
from __future__ import annotations

import base64
import contextlib
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
    "erase_credentials",
    "load_credentials",
    "parse_challenges",
    "podman_auth_paths",
    "run_helper",
    "server_key",
    "store_credentials",
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
    """A user name and password for one registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate challenge of a registry."""

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


def podman_auth_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where podman, buildah and skopeo keep logins, in the order containers/image reads them."""
    env = os.environ if env is None else env
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    paths.append(Path(env.get("HOME") or Path.home()) / ".config" / "containers" / "auth.json")
    return paths


def server_key(host: str) -> str:
    """The key docker writes a login under (and passes to credential helpers)."""
    return DOCKER_HUB_KEY if host in _HUB_HOSTS else host


def _keys_for(host: str) -> list[str]:
    if host in _HUB_HOSTS:
        return [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # exc carries a position and a reason, never the file's content
        raise RegistryError(f"cannot read registry credentials from {path}: "
                            f"{type(exc).__name__}: {getattr(exc, 'msg', '')}".rstrip(": ")) from None
    return config if isinstance(config, dict) else None


def load_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``host``: docker's config.json first (``credHelpers``, then
    ``credsStore``, then ``auths``), then podman's auth.json files. Helpers are run through
    the docker-credential-* protocol."""
    env = os.environ if env is None else env
    for path in [docker_config_path(env), *podman_auth_paths(env)]:
        config = _read_config(path)
        if config is None:
            continue
        creds = _from_config(host, path, config, env)
        if creds is not None:
            return creds
    return None


def _from_config(host: str, path: Path, config: Mapping[str, Any],
                 env: Mapping[str, str]) -> Credentials | None:
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    for key in _keys_for(host):
        if helpers.get(key):
            return run_helper(str(helpers[key]), "get", server_key(host), env=env)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
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
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]))
    if config.get("credsStore"):
        return run_helper(str(config["credsStore"]), "get", server_key(host), env=env)
    return None


def run_helper(name: str, action: str, server: str, *, secret: Credentials | None = None,
               env: Mapping[str, str] | None = None) -> Credentials | None:
    """One call of ``docker-credential-NAME get|store|erase`` (the helper protocol: the server
    URL, or a JSON document for store, on stdin; JSON {Username, Secret} on stdout for get)."""
    import shutil
    import subprocess

    program = f"docker-credential-{name}"
    path_env = (env or os.environ).get("PATH")
    exe = shutil.which(program, path=path_env)
    if exe is None:
        raise RegistryError(f"the credential helper {program} named in the registry "
                            "configuration is not installed",
                            hint=f"install {program}, or remove it from the config file")
    if action == "store":
        assert secret is not None
        payload = json.dumps({"ServerURL": server, "Username": secret.username,
                              "Secret": secret.password})
    else:
        payload = server
    try:
        done = subprocess.run([exe, action], input=payload.encode(), capture_output=True,
                              timeout=60, check=False, env=dict(env) if env is not None else None)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"the credential helper {program} failed to run: "
                            f"{type(exc).__name__}") from None
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        if action == "get" and "credentials not found" in out.lower():
            return None
        if action == "erase" and "not found" in out.lower():
            return None
        # The helper's own words may be the stdout echo of what it was given; never show them.
        raise RegistryError(f"the credential helper {program} {action} for {server} failed "
                            f"(exit status {done.returncode})")
    if action != "get":
        return None
    try:
        doc = json.loads(out)
        user, secret_text = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"the credential helper {program} answered {server} with "
                            "something that is not {Username, Secret} JSON") from None
    return Credentials(user, secret_text) if secret_text else None


def store_credentials(host: str, creds: Credentials, env: Mapping[str, str] | None = None) -> Path:
    """Save a login as ``docker login`` does: through the configured helper, else as a base64
    ``auth`` entry of config.json (written aside, mode 600, renamed)."""
    env = os.environ if env is None else env
    path = docker_config_path(env)
    config = _read_config(path) or {}
    key = server_key(host)
    helper = _helper_for(config, host)
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    if helper:
        run_helper(helper, "store", key, secret=creds, env=env)
        auths[key] = {}  # docker leaves an empty entry so the host is listed
    else:
        raw = f"{creds.username}:{creds.password}".encode()
        auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
    _write_config(path, config)
    return path


def erase_credentials(host: str, env: Mapping[str, str] | None = None) -> bool:
    """Forget a login (docker logout); True when there was one."""
    env = os.environ if env is None else env
    path = docker_config_path(env)
    config = _read_config(path)
    if config is None:
        return False
    found = False
    helper = _helper_for(config, host)
    if helper:
        found = run_helper(helper, "get", server_key(host), env=env) is not None
        run_helper(helper, "erase", server_key(host), env=env)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key in _keys_for(host):
        if key in auths:
            found = found or bool(auths[key])
            del auths[key]
    _write_config(path, config)
    return found


def _helper_for(config: Mapping[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    for key in _keys_for(host):
        if helpers.get(key):
            return str(helpers[key])
    return str(config["credsStore"]) if config.get("credsStore") else None


def _write_config(path: Path, config: Mapping[str, Any]) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent="\t")
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        if scope:  # a login check asks for no scope, only whether the credentials are good
            params["scope"] = scope
        realm = ch.params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        headers = {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        try:
            if self.credentials and self.credentials.username == "<token>":
                # an identity token (docker login through OAuth2): exchange it as a refresh token
                form = {**params, "grant_type": "refresh_token", "client_id": "pybuild",
                        "refresh_token": self.credentials.password}
                resp = self.transport.request("POST", realm, data=form, timeout=self.timeout)
            else:
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
