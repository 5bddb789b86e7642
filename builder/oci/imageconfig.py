"""The image configuration JSON (OCI image-spec config.md plus docker's Healthcheck/OnBuild/Shell).

Top-level keys are written sorted, as BuildKit writes them (it re-marshals the config through a
map); the inner ``config`` object keeps the field order of the Go struct (OCI fields first,
then docker's extensions). Unknown fields survive a parse/serialise round trip.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from builder.digest import Digest, sha256_bytes
from builder.oci._json import (
    ImageFormatError,
    decode,
    encode,
    extra_fields,
    opt,
    opt_strs,
    put,
    req,
    str_map,
    strs,
    to_digest,
    typed,
)

__all__ = ["ContainerConfig", "Healthcheck", "History", "ImageConfig"]


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """Durations are nanoseconds, as docker stores them."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    _KEYS = (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod"),
             ("start_interval", "StartInterval"), ("retries", "Retries"))

    @classmethod
    def from_json(cls, obj: Any) -> Healthcheck:
        what = "image config: Healthcheck"
        typed(obj, dict, what)
        values = {attr: opt(obj, key, int, what, 0) for attr, key in cls._KEYS}
        return cls(test=strs(obj, "Test", what), **values)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put(out, "Test", self.test)
        for attr, key in self._KEYS:
            put(out, key, getattr(self, attr))
        return out


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """The ``config`` object: how a container of the image runs."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
              "Labels", "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")

    @classmethod
    def from_json(cls, obj: Any) -> ContainerConfig:
        what = "image config: config"
        typed(obj, dict, what)
        health = obj.get("Healthcheck")
        return cls(
            user=opt(obj, "User", str, what, ""),
            exposed_ports=tuple(opt(obj, "ExposedPorts", dict, what, {})),
            env=strs(obj, "Env", what),
            entrypoint=opt_strs(obj, "Entrypoint", what),
            cmd=opt_strs(obj, "Cmd", what),
            volumes=tuple(opt(obj, "Volumes", dict, what, {})),
            working_dir=opt(obj, "WorkingDir", str, what, ""),
            labels=str_map(obj, "Labels", what),
            stop_signal=opt(obj, "StopSignal", str, what, ""),
            args_escaped=opt(obj, "ArgsEscaped", bool, what, False),
            healthcheck=Healthcheck.from_json(health) if health is not None else None,
            on_build=strs(obj, "OnBuild", what),
            shell=strs(obj, "Shell", what),
            extra=extra_fields(obj, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        # The maps in the order Go marshals a map: keys sorted (byte order of their UTF-8).
        out: dict[str, Any] = {}
        put(out, "User", self.user)
        put(out, "ExposedPorts", {p: {} for p in sorted(self.exposed_ports)})
        put(out, "Env", self.env)
        put(out, "Entrypoint", self.entrypoint)
        put(out, "Cmd", self.cmd)
        put(out, "Volumes", {v: {} for v in sorted(self.volumes)})
        put(out, "WorkingDir", self.working_dir)
        put(out, "Labels", {k: self.labels[k] for k in sorted(self.labels)})
        put(out, "StopSignal", self.stop_signal)
        put(out, "ArgsEscaped", self.args_escaped)
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        put(out, "OnBuild", self.on_build)
        put(out, "Shell", self.shell)
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class History:
    """One history entry of an OCI image config."""

    created: str | None = None
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("created", "created_by", "author", "comment", "empty_layer")

    @classmethod
    def from_json(cls, obj: Any, what: str = "image config: history") -> History:
        typed(obj, dict, what)
        return cls(
            created=opt(obj, "created", str, what, None),
            created_by=opt(obj, "created_by", str, what, ""),
            author=opt(obj, "author", str, what, ""),
            comment=opt(obj, "comment", str, what, ""),
            empty_layer=opt(obj, "empty_layer", bool, what, False),
            extra=extra_fields(obj, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put(out, "created", self.created)
        put(out, "created_by", self.created_by)
        put(out, "author", self.author)
        put(out, "comment", self.comment)
        put(out, "empty_layer", self.empty_layer)
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image configuration. ``created`` is kept as the RFC 3339 text it was read as."""

    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    created: str | None = None
    author: str = ""
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("architecture", "os", "variant", "os.version", "os.features", "created", "author",
              "config", "rootfs", "history")

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        return cls.from_json(decode(data, "image config"))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ImageConfig:
        what = "image config"
        rootfs = req(obj, "rootfs", dict, what)
        kind = req(rootfs, "type", str, f"{what}: rootfs")
        if kind != "layers":
            raise ImageFormatError(f"{what}: rootfs.type is {kind!r}, expected 'layers'")
        diff_ids = req(rootfs, "diff_ids", list, f"{what}: rootfs")
        history = opt(obj, "history", list, what, [])
        return cls(
            architecture=req(obj, "architecture", str, what),
            os=req(obj, "os", str, what),
            variant=opt(obj, "variant", str, what, ""),
            os_version=opt(obj, "os.version", str, what, ""),
            os_features=strs(obj, "os.features", what),
            created=opt(obj, "created", str, what, None),
            author=opt(obj, "author", str, what, ""),
            config=ContainerConfig.from_json(opt(obj, "config", dict, what, {})),
            diff_ids=tuple(to_digest(d, f"{what}: rootfs.diff_ids[{i}]")
                           for i, d in enumerate(diff_ids)),
            history=tuple(History.from_json(h, f"{what}: history[{i}]")
                          for i, h in enumerate(history)),
            extra=extra_fields(obj, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        put(out, "variant", self.variant)
        put(out, "os.version", self.os_version)
        put(out, "os.features", self.os_features)
        put(out, "created", self.created)
        put(out, "author", self.author)
        out["config"] = self.config.to_json()
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        put(out, "history", [h.to_json() for h in self.history])
        return {k: out[k] for k in sorted(out)}

    def to_bytes(self) -> bytes:
        return encode(self.to_json())

    @property
    def digest(self) -> Digest:
        """The digest of this config as pybuild writes it (``to_bytes``)."""
        return sha256_bytes(self.to_bytes())

    def replace(self, **changes: Any) -> ImageConfig:
        return replace(self, **changes)

