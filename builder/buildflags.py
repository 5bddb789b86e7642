"""The values of the `docker buildx build` flags that CI scripts pass and pybuild took
later: the RUN sandbox's (--add-host, --shm-size, --ulimit), the manifest's (--annotation)
and the attestation switches (--attest, --provenance, --sbom), parsed as buildx parses
them and checked before the build.

Each parser takes what click collected (a tuple of the repeated option's values) and
returns a plain value for ``BuildRequest``; a bad value is a ``UsageError`` naming it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .parse_go import GO_FALSE, GO_TRUE, ram_in_bytes

if TYPE_CHECKING:
    from .provenance import ProvenanceOptions

__all__ = ["GO_FALSE", "GO_TRUE", "HOST_GATEWAY", "ULIMIT_NAMES", "Annotations", "parse_add_hosts",
           "parse_annotations", "parse_attestations", "parse_bytes", "parse_ulimits"]

# docker's special --add-host address: the host as the build container reaches it. RUN
# steps share the host's network here, so that is the loopback address.
HOST_GATEWAY = "127.0.0.1"


def _csv_fields(value: str) -> list[str]:
    """The comma-separated items of one value, as a cobra string-slice flag splits it
    (a field in double quotes may hold commas)."""
    import csv  # only a build given one of these flags reads them

    return next(csv.reader([value]), [])


def _ip(text: str) -> str | None:
    """``text`` as Go prints a parsed IP (IPv6 compressed, IPv4-mapped as IPv4), or None
    when Go's net.ParseIP would refuse it (zone ids included)."""
    if "%" in text:
        return None
    import ipaddress

    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_add_hosts(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`--add-host HOST:IP` or `HOST=IP` (repeatable, comma-separated too; IPv6 in brackets
    or not; `host-gateway` for the host): (host, ip) pairs in order, the host lowercased
    as BuildKit writes it into /etc/hosts."""
    out: list[tuple[str, str]] = []
    for value in values:
        for item in _csv_fields(value) or [value]:
            host, sep, ips = item.partition("=")
            if not sep:
                host, sep, ips = item.partition(":")
            if not sep or not host or not ips:
                raise UsageError(f"invalid --add-host {item!r}: expected HOST:IP or HOST=IP")
            for ip in ips.split(","):
                if ip == "host-gateway":
                    out.append((host.lower(), HOST_GATEWAY))
                    continue
                if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
                    ip = ip[1:-1]
                shown = _ip(ip)
                if shown is None:
                    raise UsageError(f"invalid --add-host {item!r}: {ip!r} is not an IP address")
                out.append((host.lower(), shown))
    return tuple(out)


def parse_bytes(text: str, option: str) -> int:
    """A size as docker reads --memory and --shm-size (``parse_go.ram_in_bytes``)."""
    size = ram_in_bytes(text.strip())
    if size is None:
        raise UsageError(f"invalid {option} {text!r}: use a number of bytes with an optional "
                         "unit: k, m, g (e.g. 128m, 2g)")
    return size


# docker's --ulimit names (go-units); `as` is left out there too
ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
                "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
_INT64 = r"^[+-]?\d+$"  # compiled where used


def _limit(item: str, text: str) -> int:
    value = int(text) if re.match(_INT64, text) else None
    if value is None or not -(1 << 63) <= value < 1 << 63:
        raise UsageError(f"invalid --ulimit {item!r}: {text!r} is not an integer")
    return value


def parse_ulimits(values: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """`--ulimit NAME=SOFT[:HARD]` (repeatable; HARD defaults to SOFT, -1 is unlimited):
    (name, soft, hard) sorted by name, a later value for a name replacing an earlier one,
    as docker keeps them."""
    limits: dict[str, tuple[str, int, int]] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"invalid --ulimit {item!r}: expected NAME=SOFT[:HARD]")
        if name not in ULIMIT_NAMES:
            raise UsageError(f"invalid --ulimit {item!r}: unknown limit {name!r}",
                             hint="one of: " + ", ".join(ULIMIT_NAMES))
        parts = text.split(":")
        if len(parts) > 2:
            raise UsageError(f"invalid --ulimit {item!r}: give at most two values, SOFT[:HARD]")
        soft = _limit(item, parts[0])
        hard = _limit(item, parts[1]) if len(parts) == 2 else soft
        if hard != -1 and (soft == -1 or soft > hard):
            raise UsageError(f"invalid --ulimit {item!r}: the soft limit must not exceed the "
                             "hard limit (-1 is unlimited)")
        limits[name] = (name, soft, hard)
    return tuple(limits[name] for name in sorted(limits))


# buildx's `--annotation TYPE[PLATFORM],...:KEY=VALUE` prefix: a type, an optional platform
_ANNOTATION_TYPE = r"^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$"  # compiled where used
_SINGLE = "index annotations not supported for single platform export"  # BuildKit's words


@dataclass(frozen=True)
class Annotations:
    """``--annotation`` values by where they go, as buildx sorts them. ``manifest`` and
    ``descriptor`` hold those for every image of the build (and, in a build for one
    platform, those scoped to it); ``by_platform`` those scoped to one platform of a build
    for several, as (manifest, descriptor) pairs."""

    manifest: Mapping[str, str] = field(default_factory=dict)
    descriptor: Mapping[str, str] = field(default_factory=dict)  # the manifest's entry (index, index.json)
    index: Mapping[str, str] = field(default_factory=dict)
    index_descriptor: Mapping[str, str] = field(default_factory=dict)  # the index's index.json entry
    by_platform: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]] = field(default_factory=dict)

    def for_manifest(self, platform: str | None) -> Mapping[str, str]:
        """Those of ``platform``'s image manifest: the build's, then those scoped to it."""
        scoped = self.by_platform.get(platform or "")
        return {**self.manifest, **scoped[0]} if scoped else self.manifest

    def entries(self, images: Sequence[tuple[str | None, Any]]) -> dict[Any, Mapping[str, str]]:
        """The manifest-descriptor annotations of each (platform, image) listed in an index,
        by manifest digest."""
        out: dict[Any, Mapping[str, str]] = {}
        for platform, image in images:
            scoped = self.by_platform.get(platform or "")
            entry = {**self.descriptor, **(scoped[1] if scoped else {})}
            if entry:
                out[image.manifest_digest] = entry
        return out


def _platform_of(wanted: str, platforms: Sequence[str]) -> str | None:
    """The build platform an annotation's ``[platform]`` names (a variant may be left out)."""
    wanted = wanted.lower()
    for p in platforms:
        if wanted in (p.lower(), p.lower().split("/v")[0]):
            return p
    return None


def parse_annotations(values: tuple[str, ...], platforms: Sequence[str], *,
                      makes_index: bool) -> Annotations:
    """`--annotation [TYPE[PLATFORM],...:]KEY=VALUE` as buildx reads it, for a build of
    ``platforms``: annotations for the image manifests (no type, or `manifest`), for their
    descriptors (`manifest-descriptor`: their entries in the index, or in an OCI archive's
    index.json), for the image index and for its descriptor (`index`, `index-descriptor`:
    refused, in BuildKit's words, when the build makes no index: one platform and no
    attestation). A platform must be one the build makes. A later value for a key replaces
    the earlier."""
    manifest: dict[str, str] = {}
    descriptor: dict[str, str] = {}
    index: dict[str, str] = {}
    index_descriptor: dict[str, str] = {}
    by_platform: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for item in values:
        if not item:
            continue
        spec, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid --annotation {item!r}: expected KEY=VALUE")
        types, colon, key = spec.partition(":")
        if not colon:
            types, key = "", spec
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"invalid --annotation {item!r}: the key must be a word without spaces")
        for prefix in types.split(",") if types else ["manifest"]:
            m = re.match(_ANNOTATION_TYPE, prefix)
            if m is None:
                raise UsageError(f"invalid --annotation {item!r}: {prefix!r} is not a type with an "
                                 "optional [platform]")
            kind, platform = m.group(1), m.group(2)
            if kind not in ("manifest", "manifest-descriptor", "index", "index-descriptor"):
                raise UsageError(f"invalid --annotation {item!r}: unknown annotation type {kind!r}",
                                 hint="one of: manifest, manifest-descriptor, index, index-descriptor")
            if kind.startswith("index"):
                if not makes_index:
                    raise UsageError(f"--annotation {item!r}: {_SINGLE}",
                                     hint="a build for one platform without attestations makes no "
                                          "image index; use manifest: or manifest-descriptor:")
                if platform:
                    raise UsageError(f"invalid --annotation {item!r}: an {kind} annotation takes "
                                     "no platform (the index holds them all)")
                (index if kind == "index" else index_descriptor)[key] = value
                continue
            scoped = None
            if platform:
                scoped = _platform_of(platform, platforms)
                if scoped is None:
                    raise UsageError(f"--annotation {item!r}: this build makes no {platform} image",
                                     hint="it builds for " + ", ".join(platforms))
            if scoped is None or len(platforms) == 1:
                target = manifest if kind == "manifest" else descriptor
            else:
                pair = by_platform.setdefault(scoped, ({}, {}))
                target = pair[0] if kind == "manifest" else pair[1]
            target[key] = value
    return Annotations(manifest, descriptor, index, index_descriptor, by_platform)


# buildx reads --provenance, --sbom and disabled= with strconv.ParseBool (GO_TRUE, GO_FALSE)
_NO_SBOM = ("pybuild makes no SBOM attestation (it has no package scanner); "
            "turn it off with --sbom=false")


def parse_attestations(attests: tuple[str, ...], provenance: str | None,
                       sbom: str | None) -> ProvenanceOptions | None:
    """buildx's `--attest type=T[,disabled=BOOL][,KEY=VALUE...]`, `--provenance VALUE` and
    `--sbom VALUE` (a boolean, or the attestation's options), read as buildx and BuildKit
    read them: the shorthands come after the --attest values, the last word on a type wins,
    `--provenance true` is BuildKit's default mode (max). Returns the provenance asked for,
    or None (pybuild attaches none unless asked). An SBOM is refused: nothing here scans."""
    wanted: dict[str, tuple[str, dict[str, str]] | None] = {}  # type -> (flag, attrs) | off
    given = [(f"--attest {a!r}", a) for a in attests]
    for flag, value in (("--provenance", provenance), ("--sbom", sbom)):
        if value:  # an empty value is no value, as buildx reads it
            kind = flag[2:]
            text = f"type={kind},disabled={'false' if value in GO_TRUE else 'true'}" \
                if value in GO_TRUE | GO_FALSE else f"type={kind},{value}"
            given.append((f"{flag} {value!r}", text))
    for flag, text in given:
        kind, disabled, attrs = None, False, {}
        for item in _csv_fields(text):
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"invalid {flag}: {item!r} is not KEY=VALUE")
            name = key.strip().lower()
            if name == "type":
                kind = value
            elif name == "disabled":
                if value not in GO_TRUE | GO_FALSE:
                    raise UsageError(f"invalid {flag}: disabled={value} is not true or false")
                disabled = value in GO_TRUE
            else:
                attrs[key] = value
        if not kind:
            raise UsageError(f"invalid {flag}: the attestation type is not given (type=...)")
        wanted[kind] = None if disabled else (flag, attrs)
    for kind, asked in wanted.items():
        if asked is None:
            continue
        if kind == "sbom":
            raise UsageError(f"{asked[0]}: {_NO_SBOM}")
        if kind != "provenance":
            raise UsageError(f"{asked[0]}: unknown attestation type {kind!r}",
                             hint="BuildKit knows provenance and sbom")
    asked = wanted.get("provenance")
    return _provenance_options(*asked) if asked else None


def _provenance_options(flag: str, attrs: dict[str, str]) -> ProvenanceOptions:
    """BuildKit's provenance attrs: mode (min, max; full is max), version (v0.2, v1),
    builder-id, reproducible, filename, inline-only; others are ignored, as there."""
    mode = attrs.get("mode", "max")
    mode = "max" if mode == "full" else mode
    if mode not in ("min", "max"):
        raise UsageError(f"invalid {flag}: invalid mode {mode!r}", hint="mode=min or mode=max")
    version = attrs.get("version", "v0.2")
    if version not in ("v0.2", "v1"):
        raise UsageError(f"invalid {flag}: invalid provenance SLSA version: {version}",
                         hint="version=v0.2 or version=v1")
    reproducible = attrs.get("reproducible", "false")
    if reproducible not in GO_TRUE | GO_FALSE:
        raise UsageError(f"invalid {flag}: failed to parse reproducible flag {reproducible!r}")
    complete = attrs.get("complete-materials", "false")
    if complete not in GO_TRUE | GO_FALSE:
        raise UsageError(f"invalid {flag}: failed to parse complete-materials flag {complete!r}")
    if complete in GO_TRUE:
        raise UsageError(f"{flag}: provenance materials are incomplete",
                         hint="the build context is a local folder, which no digest pins; "
                              "drop complete-materials=true")
    # the exporters keep only the last part of the name (Go's path.Base)
    filename = attrs.get("filename", "").rstrip("/").rpartition("/")[2] or "provenance.json"
    if filename in (".", ".."):
        raise UsageError(f"invalid {flag}: filename={attrs['filename']} names no file")
    from .provenance import ProvenanceOptions  # only when provenance is asked for

    return ProvenanceOptions(mode=mode, version=version, builder_id=attrs.get("builder-id", ""),
                             reproducible=reproducible in GO_TRUE,
                             filename=filename,
                             inline_only=attrs.get("inline-only", "") in GO_TRUE)
