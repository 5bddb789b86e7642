"""builder.oci.auth: challenge parsing, docker config credentials, tokens through a fake transport."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from builder.errors import RegistryError
from builder.oci.auth import (
    Authenticator,
    Challenge,
    Credentials,
    docker_config_path,
    load_credentials,
    parse_challenges,
)


@dataclass
class FakeResponse:
    status_code: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def iter_content(self, chunk_size: int) -> Any:
        for i in range(0, len(self.content), chunk_size):
            yield self.content[i:i + chunk_size]

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """Answers from a queue of responses; records every request."""

    def __init__(self, *responses: FakeResponse) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str, url: str, **kw: Any) -> FakeResponse:
        self.requests.append((method, url, dict(kw.get("headers") or {})))
        return self.responses.pop(0)


@pytest.mark.parametrize("header, expected", [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'  # noqa: ISC004
     'scope="repository:library/busybox:pull"',
     [Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                           "scope": "repository:library/busybox:pull"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('Bearer realm="https://r/token?x=1,y",scope="a:b:pull,push", Basic realm="q\\"uote"',
     [Challenge("bearer", {"realm": "https://r/token?x=1,y", "scope": "a:b:pull,push"}),
      Challenge("basic", {"realm": 'q"uote'})]),
    ("bearer realm=https://unquoted/token", [Challenge("bearer", {"realm": "https://unquoted/token"})]),
    ("", []),
])
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


def _write_config(tmp_path, auths):
    (tmp_path / "config.json").write_text(json.dumps({"auths": auths}))
    return {"DOCKER_CONFIG": str(tmp_path)}


def test_credentials_from_docker_config(tmp_path):
    env = _write_config(tmp_path, {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:se:cret").decode()},
        "ghcr.io": {"username": "gh", "password": "tok"},
        "https://quay.io": {"auth": base64.b64encode(b"q:pw").decode()},
    })
    assert docker_config_path(env) == tmp_path / "config.json"
    assert load_credentials("registry-1.docker.io", env) == Credentials("hub", "se:cret")
    assert load_credentials("ghcr.io", env) == Credentials("gh", "tok")
    assert load_credentials("quay.io", env) == Credentials("q", "pw")
    assert load_credentials("example.com", env) is None
    assert load_credentials("x", {"HOME": str(tmp_path / "nohome")}) is None
    assert "tok" not in repr(load_credentials("ghcr.io", env))


def test_broken_auth_entry_is_named_without_secret(tmp_path):
    env = _write_config(tmp_path, {"ghcr.io": {"auth": base64.b64encode(b"nocolon").decode()}})
    with pytest.raises(RegistryError, match="auth entry for ghcr.io is not base64") as err:
        load_credentials("ghcr.io", env)
    assert "nocolon" not in str(err.value)


def test_anonymous_bearer_token_is_fetched_and_cached():
    t = FakeTransport(FakeResponse(200, b'{"token":"T1","expires_in":300}'))
    auth = Authenticator("r.example", t, None)
    challenge = 'Bearer realm="https://auth.example/token",service="r.example"'
    assert auth.header("repository:a/b:pull") is None
    assert auth.answer(challenge, "repository:a/b:pull") == "Bearer T1"
    _, url, headers = t.requests[0]
    assert url == "https://auth.example/token?service=r.example&scope=repository%3Aa%2Fb%3Apull"
    assert "Authorization" not in headers
    assert auth.header("repository:a/b:pull") == "Bearer T1"
    assert auth.header("repository:other:pull") is None


def test_token_request_carries_basic_credentials():
    t = FakeTransport(FakeResponse(200, b'{"access_token":"T2"}'))
    auth = Authenticator("r.example", t, Credentials("u", "p"))
    assert auth.answer('Bearer realm="https://a/t?x=1"', "repository:x:pull") == "Bearer T2"
    _, url, headers = t.requests[0]
    assert url == "https://a/t?x=1&scope=repository%3Ax%3Apull"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_refused_token_names_registry_and_status_not_secret():
    t = FakeTransport(FakeResponse(401, b'{"details":"nope"}'))
    auth = Authenticator("r.example", t, Credentials("u", "hunter2"))
    with pytest.raises(RegistryError) as err:
        auth.answer('Bearer realm="https://a/t"', "repository:x:pull")
    assert "r.example" in str(err.value) and "HTTP 401" in str(err.value)
    assert "hunter2" not in err.value.render()


def test_basic_challenge_needs_credentials_then_sends_them_up_front():
    with pytest.raises(RegistryError, match="requires a login"):
        Authenticator("r.example", FakeTransport(), None).answer('Basic realm="x"', "s")
    auth = Authenticator("r.example", FakeTransport(), Credentials("u", "p"))
    assert auth.answer('Basic realm="x"', "s").startswith("Basic ")
    assert auth.header("any") == Credentials("u", "p").basic_header()


def test_unsupported_challenge():
    with pytest.raises(RegistryError, match="does not support"):
        Authenticator("r", FakeTransport(), None).answer("Negotiate abc", "s")
