"""The image configuration a stage accumulates, and how metadata instructions change it.

ImageState mirrors the ``config`` object of the OCI/docker image config (field names as
docker writes them) plus the history. It is immutable: every instruction returns a new
state. Values arrive already expanded; this module decides only what they mean.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import BuildError

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_SHELL",
    "HistoryEntry",
    "ImageState",
    "expand_ports",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
HISTORY_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of the image config's history."""

    created_by: str
    empty_layer: bool
    comment: str = HISTORY_COMMENT
    created: str | None = None
    author: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.created:
            doc["created"] = self.created
        if self.author:
            doc["author"] = self.author
        doc["created_by"] = self.created_by
        if self.comment:
            doc["comment"] = self.comment
        if self.empty_layer:
            doc["empty_layer"] = True
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            created_by=str(doc.get("created_by", "")),
            empty_layer=bool(doc.get("empty_layer", False)),
            comment=str(doc.get("comment", "")),
            created=doc.get("created"),
            author=doc.get("author"),
        )


@dataclass(frozen=True, slots=True)
class ImageState:
    """What a stage's image config holds at one point of the build."""

    env: tuple[tuple[str, str], ...] = ()
    user: str = ""
    workdir: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    shell: tuple[str, ...] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    healthcheck: Mapping[str, Any] | None = None
    onbuild: tuple[str, ...] = ()
    args_escaped: bool | None = None
    author: str = ""
    history: tuple[HistoryEntry, ...] = ()
    # Declared ARGs: never in the config, but in what later instructions (and stages built
    # FROM this one) see. ``arg_env``: values set after any ENV of the same name;
    # ``build_args``: every declaration in order, for RUN's `|N K=V` history prefix.
    arg_env: tuple[tuple[str, str], ...] = ()
    build_args: tuple[tuple[str, str | None], ...] = ()
    # Env entries of the base image written without `=` (`NAME`): the config keeps them so
    # until an ENV sets the name, as BuildKit keeps the base's Env strings it does not touch.
    bare_env: frozenset[str] = frozenset()

    # -- reading --------------------------------------------------------------------
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def env_list(self) -> list[str]:
        return [k if k in self.bare_env and not v else f"{k}={v}" for k, v in self.env]

    def get_env(self, name: str) -> str | None:
        for k, v in self.env:
            if k == name:
                return v
        return None

    def effective_shell(self) -> tuple[str, ...]:
        return self.shell or DEFAULT_SHELL

    # -- changing -------------------------------------------------------------------
    def with_env(self, pairs: Sequence[tuple[str, str]]) -> ImageState:
        env = list(self.env)
        for key, value in pairs:
            for i, (k, _) in enumerate(env):
                if k == key:
                    env[i] = (key, value)
                    break
            else:
                env.append((key, value))
        # an ENV after an ARG of the same name wins from then on
        names = {k for k, _ in pairs}
        arg_env = tuple(p for p in self.arg_env if p[0] not in names)
        return replace(self, env=tuple(env), arg_env=arg_env, bare_env=self.bare_env - names)

    def with_arg(self, name: str, value: str | None) -> ImageState:
        # As BuildKit's dispatchArg: an ARG with no value (no default, build arg or global
        # one) sets nothing, so an earlier ARG's value of that name stays in effect.
        args = self.arg_env
        if value is not None:
            args = tuple(p for p in args if p[0] != name) + ((name, value),)
        return replace(self, arg_env=args, build_args=self.build_args + ((name, value),))

    def with_labels(self, pairs: Sequence[tuple[str, str]]) -> ImageState:
        labels = dict(self.labels)
        for key, value in pairs:
            labels[key] = value
        return replace(self, labels=tuple(labels.items()))

    def with_ports(self, ports: Sequence[str]) -> ImageState:
        have = list(self.exposed_ports)
        for p in ports:
            if p not in have:
                have.append(p)
        return replace(self, exposed_ports=tuple(have))

    def with_volumes(self, paths: Sequence[str]) -> ImageState:
        have = list(self.volumes)
        for p in paths:
            if p not in have:
                have.append(p)
        return replace(self, volumes=tuple(have))

    def with_history(self, entry: HistoryEntry) -> ImageState:
        return replace(self, history=self.history + (entry,))

    def changed(self, **changes: Any) -> ImageState:
        return replace(self, **changes)

    # -- to and from docker's JSON ------------------------------------------------------
    @classmethod
    def from_config(cls, doc: Mapping[str, Any] | None) -> ImageState:
        """The state of a base image, from its config JSON (``None`` for scratch)."""
        if not doc:
            return cls()
        cfg = doc.get("config") or {}
        env: list[tuple[str, str]] = []
        bare = set()
        for item in cfg.get("Env") or []:
            k, eq, v = str(item).partition("=")
            env.append((k, v))
            if not eq:
                bare.add(k)
        # Only the fields of the OCI config and docker's extension (Healthcheck, OnBuild,
        # Shell) are read, as BuildKit reads a base config into its DockerOCIImageConfig:
        # docker's container fields (Hostname, Tty, Image, MacAddress...) are not carried on.
        return cls(
            env=tuple(env),
            user=cfg.get("User") or "",
            workdir=cfg.get("WorkingDir") or "",
            entrypoint=tuple(cfg["Entrypoint"]) if cfg.get("Entrypoint") is not None else None,
            cmd=tuple(cfg["Cmd"]) if cfg.get("Cmd") is not None else None,
            shell=tuple(cfg["Shell"]) if cfg.get("Shell") else None,
            labels=tuple((cfg.get("Labels") or {}).items()),
            exposed_ports=tuple((cfg.get("ExposedPorts") or {}).keys()),
            volumes=tuple((cfg.get("Volumes") or {}).keys()),
            stop_signal=cfg.get("StopSignal") or "",
            healthcheck=cfg.get("Healthcheck"),
            # ONBUILD triggers of the base run in this build and are not inherited.
            onbuild=(),
            args_escaped=cfg.get("ArgsEscaped"),
            author=doc.get("author") or "",
            history=tuple(HistoryEntry.from_json(h) for h in doc.get("history") or []),
            bare_env=frozenset(bare),
        )

    def config_json(self) -> dict[str, Any]:
        """The ``config`` object, keys in the order docker writes them, empty ones left out."""
        cfg: dict[str, Any] = {}
        if self.user:
            cfg["User"] = self.user
        if self.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        env = self.env_list()
        if env:
            cfg["Env"] = env
        if self.entrypoint is not None:
            cfg["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            cfg["Cmd"] = list(self.cmd)
        if self.volumes:
            cfg["Volumes"] = {v: {} for v in self.volumes}
        if self.workdir:
            cfg["WorkingDir"] = self.workdir
        if self.labels:
            cfg["Labels"] = dict(self.labels)
        if self.stop_signal:
            cfg["StopSignal"] = self.stop_signal
        if self.args_escaped:
            cfg["ArgsEscaped"] = True
        if self.healthcheck is not None:
            cfg["Healthcheck"] = dict(self.healthcheck)
        if self.onbuild:
            cfg["OnBuild"] = list(self.onbuild)
        if self.shell:
            cfg["Shell"] = list(self.shell)
        return cfg


_PORT_NUMBER = r"[+-]?[0-9]+"  # compiled where used
_PROTOCOLS = ("tcp", "udp", "sctp")


def expand_ports(words: Sequence[str]) -> list[str]:
    """EXPOSE arguments as BuildKit records them, in order and with repeats (the config's
    ExposedPorts keeps each once): `80` -> `80/tcp`, `7000-7002/udp` -> three ports.
    As in BuildKit, `[IP:][HOSTPORT:]PORT[/PROTO]` is accepted and only PORT/PROTO kept,
    and a protocol other than tcp, udp or sctp is an error."""
    out: list[str] = []
    for word in words:
        ip, host_port, container = _split_port_parts(word)
        container, slash, proto = container.partition("/")
        if not container:
            raise BuildError(f'invalid port: "{word}": no port specified')
        proto = proto.lower() if slash else "tcp"
        if proto not in _PROTOCOLS:
            raise BuildError(f'invalid port: "{word}": invalid proto: {proto}')
        if ip:
            _check_ip(ip)
        lo, hi = _port_range(container, "containerPort")
        if host_port:
            host_lo, host_hi = _port_range(host_port, "hostPort")
            if hi - lo != host_hi - host_lo and hi != lo:
                raise BuildError("invalid ranges specified for container and host Ports: "
                                 f"{container} and {host_port}")
        out.extend(f"{port}/{proto}" for port in range(lo, hi + 1))
    return out


def _split_port_parts(word: str) -> tuple[str, str, str]:
    """(ip, host port, container port[/proto]) of ``[ip:][hostport:]port[/proto]``."""
    parts = word.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _check_ip(ip: str) -> None:
    import ipaddress

    text = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise BuildError(f"invalid IP address: {ip}") from None


def _port_range(text: str, what: str) -> tuple[int, int]:
    """``8000`` or ``8000-8002`` as (first, last); each 0-65535 and first <= last."""
    start, dash, end = text.partition("-")

    def number(part: str) -> int:
        if not re.fullmatch(_PORT_NUMBER, part) or not 0 <= int(part) <= 65535:
            raise BuildError(f"invalid {what}: {text}")
        return int(part)

    lo = number(start)
    if not dash or start == end:
        return lo, lo
    hi = number(end)
    if hi < lo:
        raise BuildError(f"invalid {what}: {text}")
    return lo, hi
