"""Where credentials come from and go to: docker's credHelpers and credsStore (a helper script
speaking the docker-credential-* protocol), podman's auth.json files, login's atomic mode-600
write and logout; certs.d TLS settings."""
from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from builder.errors import RegistryError
from builder.oci.auth import (
    Credentials,
    erase_credentials,
    load_credentials,
    podman_auth_paths,
    store_credentials,
)
from builder.oci.registry import Registry, tls_settings


def helper(bin_dir: Path, name: str, log: Path) -> None:
    """A credential helper that keeps its store in a JSON file next to it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
path = {str(log)!r}
try:
    db = json.load(open(path))
except FileNotFoundError:
    db = {{}}
action, data = sys.argv[1], sys.stdin.read()
if action == "store":
    doc = json.loads(data); db[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
elif action == "get":
    if data not in db:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": data, "Username": db[data][0], "Secret": db[data][1]}}))
elif action == "erase":
    db.pop(data, None)
json.dump(db, open(path, "w"))
""")
    script.chmod(0o755)


def env_for(tmp_path: Path, config: dict | None = None, **extra: str) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.mkdir(exist_ok=True)
    if config is not None:
        (docker / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home"),
            "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", **extra}


def test_cred_helpers_and_creds_store(tmp_path: Path) -> None:
    db = tmp_path / "db.json"
    db.write_text(json.dumps({"ghcr.io": ["gh", "ghtoken"], "https://index.docker.io/v1/": ["hub", "hubpw"],
                              "quay.io": ["q", "qpw"]}))
    helper(tmp_path / "bin", "fake", db)
    env = env_for(tmp_path, {"credHelpers": {"ghcr.io": "fake"}, "credsStore": "fake",
                             "auths": {"quay.io": {"auth": base64.b64encode(b"file:pw").decode()}}})
    assert load_credentials("ghcr.io", env) == Credentials("gh", "ghtoken")
    assert load_credentials("registry-1.docker.io", env) == Credentials("hub", "hubpw")
    assert load_credentials("quay.io", env) == Credentials("file", "pw")  # auths before credsStore
    assert load_credentials("example.com", env) is None  # "not found" is not an error
    missing = env_for(tmp_path, {"credHelpers": {"ghcr.io": "absent"}})
    with pytest.raises(RegistryError, match="docker-credential-absent .* is not installed"):
        load_credentials("ghcr.io", missing)


def test_podman_auth_json_locations(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "containers").mkdir(parents=True)
    (run / "containers" / "auth.json").write_text(json.dumps(
        {"auths": {"registry.example": {"auth": base64.b64encode(b"pod:man").decode()}}}))
    env = env_for(tmp_path, None, XDG_RUNTIME_DIR=str(run))
    assert podman_auth_paths(env)[0] == run / "containers" / "auth.json"
    assert load_credentials("registry.example", env) == Credentials("pod", "man")
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"auths": {"registry.example": {"username": "e", "password": "x"}}}))
    assert load_credentials("registry.example", {**env, "REGISTRY_AUTH_FILE": str(explicit)}) == \
        Credentials("e", "x")
    home_file = tmp_path / "home" / ".config" / "containers" / "auth.json"
    home_file.parent.mkdir(parents=True)
    home_file.write_text(json.dumps({"auths": {"other.example": {"username": "h", "password": "y"}}}))
    assert load_credentials("other.example", env) == Credentials("h", "y")
    # docker's config wins over podman's
    (tmp_path / "docker" / "config.json").write_text(json.dumps(
        {"auths": {"registry.example": {"username": "d", "password": "z"}}}))
    assert load_credentials("registry.example", env) == Credentials("d", "z")


def test_login_writes_mode_600_atomically_and_logout_erases(tmp_path: Path) -> None:
    env = env_for(tmp_path, {"auths": {"keep.example": {"auth": "a2VlcDpr"}}, "other": 1})
    path = store_credentials("r.example:5000", Credentials("me", "pw:with:colons"), env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["other"] == 1 and "keep.example" in doc["auths"]
    assert base64.b64decode(doc["auths"]["r.example:5000"]["auth"]) == b"me:pw:with:colons"
    assert load_credentials("r.example:5000", env) == Credentials("me", "pw:with:colons")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # nothing left aside
    assert erase_credentials("r.example:5000", env) is True
    assert erase_credentials("r.example:5000", env) is False
    assert load_credentials("r.example:5000", env) is None
    assert "keep.example" in json.loads(path.read_text())["auths"]


def test_login_through_a_creds_store_keeps_the_secret_out_of_the_file(tmp_path: Path) -> None:
    db = tmp_path / "db.json"
    helper(tmp_path / "bin", "vault", db)
    env = env_for(tmp_path, {"credsStore": "vault"})
    path = store_credentials("docker.io", Credentials("hub", "s3cr3t"), env)
    assert "s3cr3t" not in path.read_text()
    assert json.loads(path.read_text())["auths"] == {"https://index.docker.io/v1/": {}}
    assert json.loads(db.read_text()) == {"https://index.docker.io/v1/": ["hub", "s3cr3t"]}
    assert load_credentials("registry-1.docker.io", env) == Credentials("hub", "s3cr3t")
    assert erase_credentials("docker.io", env) is True
    assert json.loads(db.read_text()) == {}


def test_certs_d_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = tmp_path / "certs.d"
    env = {"PYBUILD_CERTS_D": str(certs)}
    assert tls_settings("r.example:5000", env) is None
    folder = certs / "r.example:5000"
    folder.mkdir(parents=True)
    assert tls_settings("r.example:5000", env).verify is True  # type: ignore[union-attr]
    (folder / "ca.crt").write_text("CA1\n")
    assert tls_settings("r.example:5000", env).verify == str(folder / "ca.crt")  # type: ignore[union-attr]
    (folder / "extra.crt").write_text("CA2\n")
    bundle = tls_settings("r.example:5000", env).verify  # type: ignore[union-attr]
    assert Path(str(bundle)).read_text() == "CA1\nCA2\n"
    (folder / "client.cert").write_text("C")
    with pytest.raises(RegistryError, match="no matching key client.key"):
        tls_settings("r.example:5000", env)
    (folder / "client.key").write_text("K")
    assert tls_settings("r.example:5000", env).cert == (  # type: ignore[union-attr]
        str(folder / "client.cert"), str(folder / "client.key"))
    # a loopback registry with a certs.d folder speaks TLS, verified against its CA
    monkeypatch.setenv("PYBUILD_CERTS_D", str(certs))
    (certs / "127.0.0.1:5000").mkdir()
    (certs / "127.0.0.1:5000" / "ca.crt").write_text("X")
    reg = Registry("127.0.0.1:5000", transport=object(), credentials=None)  # type: ignore[arg-type]
    assert reg.base == "https://127.0.0.1:5000/v2/"
    assert reg._tls_kwargs(reg.base) == {"verify": str(certs / "127.0.0.1:5000" / "ca.crt")}
    plain = Registry("127.0.0.2:5000", transport=object(), credentials=None)  # type: ignore[arg-type]
    assert plain.base.startswith("http://")
