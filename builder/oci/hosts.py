"""How each registry host is reached, as BuildKit's ``[registry."HOST"]`` tables and dockerd's
``daemon.json`` describe it: the mirrors a pull tries first, plain HTTP, unverified TLS, and
the CAs and client certificate to use.

Where the settings come from, read once per process and only when a registry is contacted:

* a buildkitd.toml: ``$PYBUILD_BUILDKITD_CONFIG`` when set (it must exist), else the first of
  buildx's ``buildkitd.default.toml`` (``$BUILDX_CONFIG``, default ``~/.docker/buildx``) and
  buildkitd's own ``/etc/buildkit/buildkitd.toml`` (``$XDG_CONFIG_HOME/buildkit`` when not
  root). Only its ``registry`` tables are read: ``mirrors``, ``http``, ``insecure``, ``ca``
  and ``keypair``.
* dockerd's ``daemon.json`` (``$PYBUILD_DAEMON_JSON``, default ``/etc/docker/daemon.json``):
  ``registry-mirrors`` are mirrors of docker.io, as ``docker build`` uses them, and
  ``insecure-registries`` (names or CIDR ranges) are insecure. A buildkitd.toml's own
  ``docker.io`` mirrors win over daemon.json's.

* containers' ``registries.conf`` (buildah's and podman's): ``$CONTAINERS_REGISTRIES_CONF``,
  else ``~/.config/containers/registries.conf`` or ``/etc/containers/registries.conf``, and
  the ``registries.conf.d`` drop-ins beside it. Its ``[[registry]]`` tables are read:
  ``prefix`` (a host, or a host and a namespace; the longest match wins; ``*.domain``
  wildcards for ``insecure``/``blocked``), ``location`` (where pulls go instead),
  ``insecure``, ``blocked``, ``mirror-by-digest-only`` and the ``[[registry.mirror]]``
  list (``location``, ``insecure``, ``pull-from-mirror``). Its mirrors are tried after
  those of the other two files.

A mirror is ``host[:port][/path]``; a path is put in front of the repository, as BuildKit does
for a mirror that serves a proxy project (``harbor.example/proxy.docker.io``). A mirror is
reached with its own table's settings (a loopback mirror speaks plain HTTP by default), and
only for pulls: a push always goes to the registry itself.
"""
from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import RegistryError

__all__ = ["ContainersRegistry", "HostConfig", "Mirror", "Place", "containers_entry", "host_config",
           "mirrors_for", "pull_places", "registry_settings", "reset"]


@dataclass(frozen=True)
class HostConfig:
    """One ``[registry."HOST"]`` table; None where the table says nothing."""

    mirrors: tuple[str, ...] = ()
    http: bool | None = None
    insecure: bool | None = None
    ca: tuple[str, ...] = ()
    keypair: tuple[str, str] | None = None  # (certificate, key)


@dataclass(frozen=True)
class Mirror:
    """A mirror of a registry, with the path put in front of repositories."""

    host: str
    path: str = ""  # put in front of the repository: "proxy.docker.io/library/python"

    def __str__(self) -> str:
        return f"{self.host}/{self.path}" if self.path else self.host


@dataclass(frozen=True)
class ContainersRegistry:
    """One ``[[registry]]`` table of a registries.conf."""

    prefix: str
    location: str = ""
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[tuple[str, bool, str], ...] = ()  # (location, insecure, pull-from-mirror)
    source: str = "registries.conf"


@dataclass(frozen=True)
class Place:
    """Somewhere a pull asks: a mirror, or the registry (``mirror`` None)."""

    host: str
    repository: str
    mirror: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class _Settings:
    """The registry settings read from the host's configuration files."""

    hosts: Mapping[str, HostConfig]
    insecure_nets: tuple[Any, ...] = ()  # daemon.json's CIDR ranges
    containers: tuple[ContainersRegistry, ...] = ()


_lock = threading.Lock()
_loaded: _Settings | None = None


def reset() -> None:
    """Forget what was read (tests change the environment between builds in one process)."""
    global _loaded
    with _lock:
        _loaded = None


def _settings() -> _Settings:
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = load(os.environ)
        return _loaded


def host_config(host: str) -> HostConfig:
    """The settings of ``host`` as a registry name (``docker.io``, ``127.0.0.1:5000``)."""
    s = _settings()
    conf = s.hosts.get(host, HostConfig())
    if conf.insecure is None and (s.insecure_nets and _in_nets(host, s.insecure_nets)
                                  or _containers_insecure(host)):
        conf = HostConfig(conf.mirrors, conf.http, True, conf.ca, conf.keypair)
    return conf


def _containers_insecure(host: str) -> bool:
    """registries.conf's ``insecure`` for a whole host (its prefix is the host, or a
    wildcard over it)."""
    return any(entry.insecure and (entry.prefix == host or (
        entry.prefix.startswith("*.") and host.split(":")[0].endswith(entry.prefix[1:])))
        for entry in _settings().containers)


def registry_settings(api_host: str) -> HostConfig:
    """The settings for an API host: ``registry-1.docker.io`` is configured as docker.io."""
    return host_config("docker.io" if api_host == "registry-1.docker.io" else api_host)


def mirrors_for(registry: str) -> tuple[Mirror, ...]:
    """The mirrors a pull from ``registry`` (a reference's domain) tries, in order."""
    return tuple(_mirror(m) for m in host_config(registry).mirrors)


def pull_places(registry: str, repository: str, *, by_digest: bool) -> list[Place]:
    """Where a pull of ``registry/repository`` asks, in order: buildkitd.toml's and
    daemon.json's mirrors, registries.conf's mirrors, then the registry itself (or where
    registries.conf's ``location`` sends it). A blocked registry is an error."""
    places = [Place(m.host, f"{m.path}/{repository}" if m.path else repository, str(m))
              for m in mirrors_for(registry)]
    origin = Place(registry, repository)
    entry = containers_entry(registry, repository)
    if entry is not None:
        if entry.blocked:
            raise RegistryError(f"{registry}/{repository}: pulls from {entry.prefix} are blocked "
                                f"by {entry.source}")
        if not entry.prefix.startswith("*."):  # a wildcard only marks hosts
            rest = f"{registry}/{repository}"[len(entry.prefix):]  # the name after the prefix
            for location, insecure, pull_from in entry.mirrors:
                wanted = "digest-only" if entry.mirror_by_digest_only else pull_from
                if (wanted == "digest-only" and not by_digest) or (wanted == "tag-only" and by_digest):
                    continue
                host, _, repo = (location.rstrip("/") + rest).partition("/")
                places.append(Place(host, repo, location, insecure))
            if entry.location and entry.location != entry.prefix:
                host, _, repo = (entry.location.rstrip("/") + rest).partition("/")
                origin = Place(host, repo)
        origin = Place(origin.host, origin.repository, None, entry.insecure)
    return [*places, origin]


def containers_entry(registry: str, repository: str) -> ContainersRegistry | None:
    """The registries.conf table for a reference: the longest prefix that matches it whole
    components at a time; a ``*.domain`` prefix matches hosts under that domain."""
    name = f"{registry}/{repository}"
    best = None
    for entry in _settings().containers:
        prefix = entry.prefix
        if prefix.startswith("*."):
            hit = registry.split(":")[0].endswith(prefix[1:])
            length = 0  # any named prefix wins over a wildcard
        else:
            hit = name == prefix or name.startswith(prefix.rstrip("/") + "/")
            length = len(prefix) + 1
        if hit and (best is None or length > best[0]):
            best = (length, entry)
    return best[1] if best else None


def _mirror(text: str) -> Mirror:
    # as BuildKit reads it: an optional scheme is dropped, the rest is host and path
    rest = text.split("://", 1)[1] if "://" in text else text
    host, _, path = rest.partition("/")
    return Mirror(host, path.strip("/"))


def _in_nets(host: str, nets: tuple[Any, ...]) -> bool:
    name = host
    if name.startswith("["):
        name = name[1:].split("]")[0]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in nets)


# -- reading the files -------------------------------------------------------------------

def buildkitd_paths(env: Mapping[str, str]) -> list[Path]:
    """Where a buildkitd.toml is looked for, in order (the first that exists is read)."""
    explicit = env.get("PYBUILD_BUILDKITD_CONFIG")
    if explicit:
        return [Path(explicit)]
    home = Path(env.get("HOME") or "~").expanduser()
    buildx = Path(env["BUILDX_CONFIG"]) if env.get("BUILDX_CONFIG") else home / ".docker" / "buildx"
    if os.geteuid() == 0:
        own = Path("/etc/buildkit/buildkitd.toml")
    else:
        own = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "buildkit" / "buildkitd.toml"
    return [buildx / "buildkitd.default.toml", own]


def load(env: Mapping[str, str]) -> _Settings:
    hosts: dict[str, HostConfig] = {}
    paths = buildkitd_paths(env)
    if env.get("PYBUILD_BUILDKITD_CONFIG") and not paths[0].is_file():
        raise RegistryError(f"PYBUILD_BUILDKITD_CONFIG names {paths[0]}, which is not a file")
    for path in paths:
        if path.is_file():
            hosts = _read_buildkitd(path)
            break
    nets: tuple[Any, ...] = ()
    daemon = Path(env.get("PYBUILD_DAEMON_JSON") or "/etc/docker/daemon.json")
    if daemon.is_file():
        nets = _merge_daemon_json(daemon, hosts)
    return _Settings(hosts, nets, _read_containers(env))


def registries_conf_paths(env: Mapping[str, str]) -> list[Path]:
    """registries.conf, then its drop-ins in name order, as containers/image reads them."""
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        return [Path(env["CONTAINERS_REGISTRIES_CONF"])]
    home = Path(env.get("HOME") or "~").expanduser()
    user = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers"
    main = user / "registries.conf"
    if not main.is_file():
        main = Path("/etc/containers/registries.conf")
    drop_ins: dict[str, Path] = {}
    for folder in (Path("/etc/containers/registries.conf.d"), user / "registries.conf.d"):
        if folder.is_dir():
            drop_ins.update({p.name: p for p in folder.glob("*.conf")})
    return [main, *(drop_ins[n] for n in sorted(drop_ins))]


def _read_containers(env: Mapping[str, str]) -> tuple[ContainersRegistry, ...]:
    import tomllib

    by_prefix: dict[str, ContainersRegistry] = {}
    for path in registries_conf_paths(env):
        if not path.is_file():
            continue
        doc = _read(path, "TOML", tomllib.loads, tomllib.TOMLDecodeError)
        tables = doc.get("registry", [])
        if isinstance(tables, dict):
            continue  # the v1 format's [registries.*] tables say nothing of mirrors
        if not isinstance(tables, list):
            raise RegistryError(f"{path}: registry must be a list of [[registry]] tables")
        for i, table in enumerate(tables):
            entry = _containers_table(table, f"{path}: [[registry]] #{i + 1}", str(path))
            by_prefix[entry.prefix] = entry  # a later file's table replaces an earlier one
    return tuple(by_prefix.values())


def _containers_table(table: Any, where: str, source: str) -> ContainersRegistry:
    if not isinstance(table, dict):
        raise RegistryError(f"{where} must be a table")
    location = _string(table.get("location", ""), f"{where} location").rstrip("/")
    prefix = _string(table.get("prefix", ""), f"{where} prefix").rstrip("/") or location
    if not prefix:
        raise RegistryError(f"{where} needs a prefix or a location")
    mirrors = []
    for j, m in enumerate(table.get("mirror", [])):
        mwhere = f"{where} mirror #{j + 1}"
        if not isinstance(m, dict) or not m.get("location"):
            raise RegistryError(f"{mwhere} needs a location")
        pull_from = _string(m.get("pull-from-mirror", "all") or "all", f"{mwhere} pull-from-mirror")
        if pull_from not in ("all", "digest-only", "tag-only"):
            raise RegistryError(f"{mwhere} pull-from-mirror must be all, digest-only or tag-only")
        mirrors.append((_string(m["location"], f"{mwhere} location"),
                        bool(_flag(m.get("insecure"), f"{mwhere} insecure")), pull_from))
    return ContainersRegistry(
        prefix, location, bool(_flag(table.get("insecure"), f"{where} insecure")),
        bool(_flag(table.get("blocked"), f"{where} blocked")),
        bool(_flag(table.get("mirror-by-digest-only"), f"{where} mirror-by-digest-only")),
        tuple(mirrors), source)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"{where} must be a string")
    return value


def _read(path: Path, kind: str, parse: Any, error: type[Exception]) -> dict[str, Any]:
    try:
        doc = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    except error as exc:
        raise RegistryError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path} must hold a {kind} object")
    return doc


def _read_buildkitd(path: Path) -> dict[str, HostConfig]:
    import tomllib

    doc = _read(path, "TOML", tomllib.loads, tomllib.TOMLDecodeError)
    tables = doc.get("registry", {})
    if not isinstance(tables, dict):
        raise RegistryError(f"{path}: [registry] must be a table of hosts")
    out = {}
    for host, table in tables.items():
        where = f'{path}: [registry."{host}"]'
        if not isinstance(table, dict):
            raise RegistryError(f"{where} must be a table")
        out[host] = HostConfig(
            mirrors=_strings(table.get("mirrors", []), f"{where} mirrors"),
            http=_flag(table.get("http"), f"{where} http"),
            insecure=_flag(table.get("insecure"), f"{where} insecure"),
            ca=_strings(table.get("ca", []), f"{where} ca"),
            keypair=_keypair(table.get("keypair", []), where))
    return out


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{where} must be a list of strings")
    return tuple(value)


def _flag(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise RegistryError(f"{where} must be true or false")
    return value


def _keypair(value: Any, where: str) -> tuple[str, str] | None:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RegistryError(f"{where} keypair must be a list of {{key, cert}} tables")
    for pair in value:
        if not (isinstance(pair, dict) and isinstance(pair.get("key"), str)
                and isinstance(pair.get("cert"), str)):
            raise RegistryError(f"{where} keypair needs both key and cert")
        return (pair["cert"], pair["key"])
    return None


def _merge_daemon_json(path: Path, hosts: dict[str, HostConfig]) -> tuple[Any, ...]:
    doc = _read(path, "JSON", json.loads, json.JSONDecodeError)
    mirrors = _strings(doc.get("registry-mirrors", []), f"{path}: registry-mirrors") \
        if doc.get("registry-mirrors") else ()
    hub = hosts.get("docker.io", HostConfig())
    if mirrors and not hub.mirrors:
        names = []
        for url in mirrors:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in ("http", "https") or not rest.strip("/"):
                raise RegistryError(f"{path}: registry-mirrors: {url!r} is not an http(s) URL")
            mirror = _mirror(url)
            names.append(str(mirror))
            if scheme == "http" and mirror.host not in hosts:
                hosts[mirror.host] = HostConfig(http=True)
        hosts["docker.io"] = HostConfig(tuple(names), hub.http, hub.insecure, hub.ca, hub.keypair)
    nets = []
    for entry in _strings(doc.get("insecure-registries", []), f"{path}: insecure-registries") \
            if doc.get("insecure-registries") else ():
        if "/" in entry:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise RegistryError(f"{path}: insecure-registries: {entry!r} is not a CIDR range") from None
            continue
        conf = hosts.get(entry, HostConfig())
        if conf.insecure is None:
            hosts[entry] = HostConfig(conf.mirrors, conf.http, True, conf.ca, conf.keypair)
    return tuple(nets)
