"""Pushing to registries that want credentials, as real ones do: htpasswd basic auth over TLS
(the CA from a certs.d folder), and token auth with real JWTs from a token issuer of the tests.
Logins are made with `pybuild login`, read back from docker's config.json and through a
docker-credential-* helper; no password ever shows in anything pybuild prints."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.fixtures.secure_registry import make_pki
from tests.integration.pushutil import (
    assert_one_sentence_error,
    imported,
    skopeo_digest,
    stored_digest,
)


def test_basic_auth_over_tls_with_login_certs_d_and_insecure(tls_registry, tmp_path: Path) -> None:
    reg = tls_registry
    name = f"{reg.host}/team/hello:v1"
    docker_config = tmp_path / "docker"
    env = {"DOCKER_CONFIG": str(docker_config), "PYBUILD_CERTS_D": str(reg.certs_d)}
    s = imported(tmp_path, name, env=env)

    # a wrong password is refused by the registry, and nothing is saved
    bad = s.run("login", reg.host, "-u", reg.user, "--password-stdin", stdin="not-it\n", check=False)
    assert_one_sentence_error(bad, f"login to {reg.host} failed", "HTTP 401")
    assert not (docker_config / "config.json").exists()
    # pushing without a login: denied, named
    denied = s.run("push", name, check=False)
    assert_one_sentence_error(denied, reg.host)

    s.run("login", reg.host, "-u", reg.user, "--password-stdin", stdin=reg.password + "\n")
    config = docker_config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert list(json.loads(config.read_text())["auths"]) == [reg.host]

    s.run("tag", name, f"{reg.host}/team/hello:latest")
    pushed = s.run("push", name)
    s.run("push", f"{reg.host}/team/hello:latest")
    digest = stored_digest(s, name)
    assert digest in pushed.stdout
    creds = f"{reg.user}:{reg.password}"
    cert_dir = str(reg.certs_d / reg.host)
    for tag in ("v1", "latest"):
        assert skopeo_digest(f"{reg.host}/team/hello:{tag}", "--cert-dir", cert_dir,
                             "--creds", creds) == digest

    # a pull into another store gives the same digest
    other = imported(tmp_path / "other", "unused:1", env=env)
    other.run("pull", name)
    assert stored_digest(other, name) == digest

    # TLS is verified: a certs.d folder with another CA fails; with none, a loopback registry
    # is spoken to in plain HTTP (as docker does) and the error says it speaks TLS;
    # --insecure-registry accepts its certificate unverified
    wrong = tmp_path / "wrong-certs.d"
    (wrong / reg.host).mkdir(parents=True)
    (wrong / reg.host / "ca.crt").write_bytes(make_pki(tmp_path / "other-ca").ca_cert.read_bytes())
    s.run("tag", name, f"{reg.host}/team/hello:v2")
    failed = s.run("push", f"{reg.host}/team/hello:v2", check=False,
                   env={"PYBUILD_CERTS_D": str(wrong)})
    assert_one_sentence_error(failed, reg.host, "not signed by a trusted CA")
    no_ca = {"PYBUILD_CERTS_D": str(tmp_path / "empty-certs.d")}
    failed = s.run("push", f"{reg.host}/team/hello:v2", check=False, env=no_ca)
    assert_one_sentence_error(failed, f"{reg.host} speaks TLS", "--insecure-registry")
    s.run("push", "--insecure-registry", reg.host, f"{reg.host}/team/hello:v2", env=no_ca)

    s.run("logout", reg.host)
    assert json.loads(config.read_text())["auths"] == {}
    assert_one_sentence_error(s.run("push", name, check=False), reg.host)
    assert not any(reg.password in text for text in s.seen + other.seen)


def test_token_auth_with_a_credential_helper_and_anonymous_pull(token_registry, tmp_path: Path) -> None:
    reg = token_registry
    name = f"{reg.host}/apps/tokened:1"
    # docker's credential-helper protocol, answered by a script on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-pbtest"
    helper.write_text("#!/bin/sh\n"
                      f"[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = '{reg.host}' ] || "
                      "{ echo 'credentials not found in native keychain'; exit 1; }\n"
                      f"echo '{{\"ServerURL\":\"{reg.host}\",\"Username\":\"{reg.user}\","
                      f"\"Secret\":\"{reg.password}\"}}'\n")
    helper.chmod(0o755)
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {reg.host: "pbtest"}}))
    env = {"DOCKER_CONFIG": str(docker_config), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    s = imported(tmp_path, name, big=3 << 20, env=env)

    # anonymous: the issuer grants pull only, so the registry refuses the push
    anon = imported(tmp_path / "anon", name, env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert_one_sentence_error(anon.run("push", name, check=False), reg.host, "denied")

    pushed = s.run("push", "--chunk-size", str(1 << 20), name)
    digest = stored_digest(s, name)
    assert digest in pushed.stdout
    granted = [r for r in reg.issuer.requests if r["user"] == reg.user and r["granted"]]
    assert any("push" in str(r["scope"]) for r in granted)
    assert skopeo_digest(name, "--tls-verify=false", "--creds",
                         f"{reg.user}:{reg.password}") == digest
    # an anonymous bearer token is enough to pull
    anon.run("pull", name)
    assert stored_digest(anon, name) == digest
    assert any(r["user"] is None and r["granted"] for r in reg.issuer.requests)
    assert not any(reg.password in text for text in s.seen + anon.seen)
