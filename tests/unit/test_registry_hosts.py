"""Registry host settings (builder.oci.hosts): buildkitd.toml's [registry."HOST"] tables and
daemon.json's registry-mirrors / insecure-registries, and what a Registry makes of them."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import RegistryError
from builder.oci import hosts
from builder.oci.registry import Registry


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    toml, daemon = tmp_path / "buildkitd.toml", tmp_path / "daemon.json"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYBUILD_DAEMON_JSON", str(daemon))
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tmp_path / "certs.d"))
    monkeypatch.delenv("BUILDX_CONFIG", raising=False)
    monkeypatch.delenv("PYBUILD_BUILDKITD_CONFIG", raising=False)
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "registries.conf"))
    hosts.reset()
    yield toml, daemon
    hosts.reset()


def _use(monkeypatch: pytest.MonkeyPatch, toml: Path, text: str) -> None:
    toml.write_text(text)
    monkeypatch.setenv("PYBUILD_BUILDKITD_CONFIG", str(toml))
    hosts.reset()


def test_buildkitd_mirrors_keep_order_and_paths(conf, monkeypatch) -> None:
    toml, _ = conf
    _use(monkeypatch, toml, '[registry."docker.io"]\n'
         'mirrors = ["mirror.example:5000", "https://harbor.example/proxy.docker.io/", "m3"]\n')
    assert [(m.host, m.path) for m in hosts.mirrors_for("docker.io")] == [
        ("mirror.example:5000", ""), ("harbor.example", "proxy.docker.io"), ("m3", "")]
    assert hosts.mirrors_for("quay.io") == ()


def test_no_configuration_changes_nothing(conf) -> None:
    assert hosts.mirrors_for("docker.io") == ()
    assert Registry("127.0.0.1:5000", credentials=None).base == "http://127.0.0.1:5000/v2/"
    assert Registry("registry.example", credentials=None).base == "https://registry.example/v2/"


def test_http_and_insecure_per_host(conf, monkeypatch) -> None:
    toml, _ = conf
    _use(monkeypatch, toml, '[registry."plain.example:5000"]\nhttp = true\n'
         '[registry."selfsigned.example"]\ninsecure = true\nhttp = false\n'
         '[registry."127.0.0.1:5000"]\nhttp = false\n'
         '[registry."docker.io"]\nhttp = true\n')
    plain = Registry("plain.example:5000", credentials=None)
    assert plain.base == "http://plain.example:5000/v2/"
    unverified = Registry("selfsigned.example", credentials=None)
    assert (unverified.base, unverified.verify) == ("https://selfsigned.example/v2/", False)
    # http = false: a loopback registry is asked over TLS after all
    assert Registry("127.0.0.1:5000", credentials=None).base == "https://127.0.0.1:5000/v2/"
    # docker.io's table is the one for its API host
    assert Registry("registry-1.docker.io", credentials=None).base == "http://registry-1.docker.io/v2/"


def test_ca_and_keypair_from_buildkitd_toml(conf, monkeypatch, tmp_path) -> None:
    toml, _ = conf
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    for p in (ca, cert, key):
        p.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    _use(monkeypatch, toml, f'[registry."reg.example"]\nca = ["{ca}"]\n'
         f'[[registry."reg.example".keypair]]\nkey = "{key}"\ncert = "{cert}"\n'
         f'[registry."bad.example"]\nca = ["{tmp_path / "missing.pem"}"]\n')
    reg = Registry("reg.example", credentials=None)
    assert (reg.verify, reg.client_cert) == (str(ca), (str(cert), str(key)))
    with pytest.raises(RegistryError, match=r"the CA .*missing.pem configured for bad.example is not a file"):
        Registry("bad.example", credentials=None)


def test_daemon_json_mirrors_and_insecure_ranges(conf) -> None:
    _, daemon = conf
    daemon.write_text(json.dumps({"registry-mirrors": ["http://127.0.0.1:5001", "https://hub.example/"],
                                  "insecure-registries": ["10.1.0.0/16", "old.example:5000"]}))
    hosts.reset()
    assert [str(m) for m in hosts.mirrors_for("docker.io")] == ["127.0.0.1:5001", "hub.example"]
    assert hosts.host_config("127.0.0.1:5001").http is True
    assert hosts.host_config("10.1.2.3:5000").insecure is True
    assert hosts.host_config("10.2.0.1:5000").insecure is None
    assert hosts.host_config("old.example:5000").insecure is True
    assert Registry("10.1.2.3:5000", credentials=None).verify is False


def test_buildkitd_toml_mirrors_win_over_daemon_json(conf, monkeypatch) -> None:
    toml, daemon = conf
    daemon.write_text(json.dumps({"registry-mirrors": ["https://from-daemon.example"]}))
    _use(monkeypatch, toml, '[registry."docker.io"]\nmirrors = ["from-toml.example"]\n')
    assert [str(m) for m in hosts.mirrors_for("docker.io")] == ["from-toml.example"]


def test_buildx_default_config_is_found(conf, monkeypatch, tmp_path) -> None:
    buildx = tmp_path / "home/.docker/buildx"
    buildx.mkdir(parents=True)
    (buildx / "buildkitd.default.toml").write_text('[registry."docker.io"]\nmirrors = ["bx.example"]\n')
    hosts.reset()
    assert [str(m) for m in hosts.mirrors_for("docker.io")] == ["bx.example"]


@pytest.mark.parametrize(("text", "message"), [
    ('[registry."docker.io"\nmirrors = 1\n', r"buildkitd.toml is not valid TOML: .*line 1"),
    ('[registry."docker.io"]\nmirrors = 1\n', r'\[registry."docker.io"\] mirrors must be a list of strings'),
    ('[registry."docker.io"]\nhttp = "yes"\n', r'\[registry."docker.io"\] http must be true or false'),
    ('[registry."r"]\nkeypair = [{key = "k"}]\n', r'\[registry."r"\] keypair needs both key and cert'),
])
def test_broken_buildkitd_toml_is_named(conf, monkeypatch, text, message) -> None:
    toml, _ = conf
    _use(monkeypatch, toml, text)
    with pytest.raises(RegistryError, match=message):
        hosts.mirrors_for("docker.io")


def test_broken_daemon_json_and_missing_config_are_named(conf, monkeypatch, tmp_path) -> None:
    _, daemon = conf
    daemon.write_text('{"registry-mirrors": ["mirror.example"]}')
    hosts.reset()
    with pytest.raises(RegistryError, match=r"daemon.json: registry-mirrors: 'mirror.example' is not an http\(s\) URL"):
        hosts.mirrors_for("docker.io")
    daemon.write_text("{")
    hosts.reset()
    with pytest.raises(RegistryError, match=r"daemon.json is not valid JSON"):
        hosts.mirrors_for("docker.io")
    daemon.unlink()
    monkeypatch.setenv("PYBUILD_BUILDKITD_CONFIG", str(tmp_path / "nope.toml"))
    hosts.reset()
    with pytest.raises(RegistryError, match=r"PYBUILD_BUILDKITD_CONFIG names .*nope.toml, which is not a file"):
        hosts.mirrors_for("docker.io")


def test_the_documented_example_means_what_the_page_says(conf, monkeypatch, tmp_path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/registries.md").read_text()
    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    toml, _ = conf
    _use(monkeypatch, toml, example)
    assert [(m.host, m.path) for m in hosts.mirrors_for("docker.io")] == [
        ("mirror.internal:5000", ""), ("harbor.internal", "proxy.docker.io")]
    assert hosts.host_config("mirror.internal:5000").http is True
    assert hosts.host_config("harbor.internal").ca == ("/etc/pki/internal-ca.pem",)
    internal = hosts.host_config("registry.internal")
    assert internal.insecure is True
    assert internal.keypair == ("/etc/pki/client.pem", "/etc/pki/client-key.pem")


def _containers(tmp_path: Path, text: str) -> None:
    (tmp_path / "registries.conf").write_text(text)
    hosts.reset()


def _places(registry: str, repository: str, by_digest: bool = False) -> list[tuple[str, str, str | None, bool]]:
    return [(p.host, p.repository, p.mirror, p.insecure)
            for p in hosts.pull_places(registry, repository, by_digest=by_digest)]


def test_registries_conf_mirrors_and_locations(conf, tmp_path) -> None:
    _containers(tmp_path, """
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true
[[registry.mirror]]
location = "digests.example"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io/team"
location = "proxy.example/teamcache"

[[registry]]
prefix = "*.internal.example"
insecure = true

[[registry]]
location = "blocked.example"
blocked = true
""")
    # the prefix is replaced by the mirror's location, the rest of the name kept
    assert _places("docker.io", "library/python") == [
        ("mirror.example:5000", "hub/library/python", "mirror.example:5000/hub", True),
        ("docker.io", "library/python", None, False)]
    assert _places("docker.io", "library/python", by_digest=True)[1][:2] == ("digests.example", "library/python")
    # the longest prefix wins, and its location takes the registry's place
    assert _places("docker.io", "team/app") == [("proxy.example", "teamcache/app", None, False)]
    assert hosts.host_config("reg.internal.example:5000").insecure is True
    with pytest.raises(RegistryError, match=r"blocked.example/x: pulls from blocked.example are blocked by .*registries.conf"):
        _places("blocked.example", "x")


def test_buildkitd_mirrors_come_before_registries_conf_ones(conf, monkeypatch, tmp_path) -> None:
    toml, _ = conf
    _use(monkeypatch, toml, '[registry."docker.io"]\nmirrors = ["bk.example"]\n')
    _containers(tmp_path, '[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "rc.example"\n')
    assert [p[0] for p in _places("docker.io", "library/x")] == ["bk.example", "rc.example", "docker.io"]


def test_a_v1_registries_conf_and_aliases_change_nothing(conf, tmp_path) -> None:
    _containers(tmp_path, '[registries.search]\nregistries = ["docker.io"]\n[aliases]\n"x" = "docker.io/library/x"\n')
    assert _places("docker.io", "library/x") == [("docker.io", "library/x", None, False)]


def test_a_broken_registries_conf_is_named(conf, tmp_path) -> None:
    _containers(tmp_path, '[[registry]]\nprefix = "docker.io"\n[[registry.mirror]]\ninsecure = true\n')
    with pytest.raises(RegistryError, match=r"registries.conf: \[\[registry\]\] #1 mirror #1 needs a location"):
        _places("docker.io", "library/x")
