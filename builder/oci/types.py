"""OCI and Docker schema 2 value types: media types, Platform, Descriptor, Manifest, Index, ImageConfig.

Every type parses with ``from_json(dict)`` (tolerant of unknown fields, which are kept in
``extra`` and written back) and serialises with ``to_json() -> dict`` in the field order and
omit-empty conventions of the Go structs docker and BuildKit marshal. ``encode()`` turns such a
dict into the one byte form pybuild writes everywhere (compact separators, no key sorting), so a
value written twice hashes the same. Bytes read from elsewhere are hashed as they were read,
never re-encoded.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from builder.digest import Digest, sha256_bytes
from builder.hostplatform import host_machine
from builder.oci._json import (
    ImageFormatError,
    decode,
    encode,
    extra_fields,
    opt,
    put,
    req,
    str_map,
    strs,
    to_digest,
    typed,
)

__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Healthcheck",
    "History",
    "ImageConfig",
    "ImageFormatError",
    "Index",
    "Manifest",
    "MediaType",
    "Platform",
    "decode",
    "encode",
    "host_platform",
    "parse_manifest_or_index",
]


class MediaType:
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
    OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
    INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
    CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
    LAYERS = frozenset({
        OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP,
        OCI_LAYER_NONDIST_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER,
    })
    FOREIGN = frozenset({
        DOCKER_FOREIGN_LAYER, OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD,
    })

    @staticmethod
    def compression(media_type: str) -> str:
        """'gzip', 'zstd' or '' for a layer media type."""
        if media_type.endswith(("+gzip", ".gzip")):
            return "gzip"
        if media_type.endswith("+zstd"):
            return "zstd"
        return ""


# ------------------------------------------------------------------------------ platform

@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform: os, architecture and their refinements."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8`` or ``linux/amd64`` as in ``--platform``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageFormatError(f"not a platform: {text!r} (expected os/arch[/variant])")
        return cls(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")

    def normalized(self) -> Platform:
        """Docker's normalisation: arm64's default variant is v8, aarch64 is arm64, x86_64 amd64."""
        arch, variant = self.architecture, self.variant
        arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}.get(arch, arch)
        if variant.isdigit():
            variant = "v" + variant
        if arch == "arm64" and not variant:
            variant = "v8"
        if arch == "arm" and not variant:
            variant = "v7"
        return Platform(self.os, arch, variant, self.os_version, self.os_features)

    def matches(self, other: Platform) -> bool:
        a, b = self.normalized(), other.normalized()
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def compatible_variants(self) -> tuple[str, ...]:
        """Variants this platform can run, best first (an armv7 host also runs v6 and v5)."""
        p = self.normalized()
        if p.architecture == "arm" and p.variant.startswith("v") and p.variant[1:].isdigit():
            return tuple(f"v{n}" for n in range(int(p.variant[1:]), 4, -1))
        return (p.variant,)

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Platform:
        what = "platform"
        return cls(
            os=req(obj, "os", str, what), architecture=req(obj, "architecture", str, what),
            variant=opt(obj, "variant", str, what, ""),
            os_version=opt(obj, "os.version", str, what, ""),
            os_features=strs(obj, "os.features", what),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        put(out, "os.version", self.os_version)
        put(out, "os.features", self.os_features)
        put(out, "variant", self.variant)
        return out


def host_platform() -> Platform:
    """The platform of this machine as docker names it (x86_64 -> linux/amd64, aarch64 -> linux/arm64/v8)."""
    return Platform(*host_machine())


# ---------------------------------------------------------------------------- descriptor

@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: media type, digest, size."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("mediaType", "digest", "size", "urls", "annotations", "platform")

    @classmethod
    def of_bytes(cls, media_type: str, data: bytes, **kw: Any) -> Descriptor:
        return cls(media_type, sha256_bytes(data), len(data), **kw)

    @classmethod
    def from_json(cls, obj: Any, what: str = "descriptor") -> Descriptor:
        typed(obj, dict, what)
        size = req(obj, "size", int, what)
        if size < 0:
            raise ImageFormatError(f"{what}: negative size {size}")
        plat = obj.get("platform")
        return cls(
            media_type=req(obj, "mediaType", str, what),
            digest=to_digest(req(obj, "digest", str, what), f"{what}: digest"),
            size=size,
            annotations=str_map(obj, "annotations", what),
            platform=Platform.from_json(typed(plat, dict, f"{what}: platform")) if plat else None,
            urls=strs(obj, "urls", what),
            extra=extra_fields(obj, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        put(out, "urls", self.urls)
        put(out, "annotations", dict(self.annotations))
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        out.update(self.extra)
        return out

    def replace(self, **changes: Any) -> Descriptor:
        return replace(self, **changes)


# ------------------------------------------------------------------------ manifest, index

def _header(obj: Mapping[str, Any], what: str, media_type: str, default: str,
            allowed: frozenset[str]) -> tuple[int, str]:
    """schemaVersion (only 2) and the media type (the JSON's, else the HTTP one, else OCI)."""
    version = req(obj, "schemaVersion", int, what)
    if version != 2:
        raise ImageFormatError(f"{what}: schemaVersion {version} is not supported (only 2)")
    mt = opt(obj, "mediaType", str, what, "") or media_type or default
    if mt not in allowed:
        raise ImageFormatError(f"{what}: unexpected mediaType {mt!r}")
    return version, mt


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: its config and layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    schema_version: int = 2
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("schemaVersion", "mediaType", "config", "layers", "annotations")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], media_type: str = "") -> Manifest:
        what = "image manifest"
        version, mt = _header(obj, what, media_type, MediaType.OCI_MANIFEST, MediaType.MANIFESTS)
        layers = req(obj, "layers", list, what)
        return cls(
            media_type=mt,
            config=Descriptor.from_json(req(obj, "config", dict, what), f"{what}: config"),
            layers=tuple(Descriptor.from_json(d, f"{what}: layers[{i}]") for i, d in enumerate(layers)),
            annotations=str_map(obj, "annotations", what),
            schema_version=version,
            extra=extra_fields(obj, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type,
                               "config": self.config.to_json(),
                               "layers": [d.to_json() for d in self.layers]}
        put(out, "annotations", dict(self.annotations))
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Index:
    """An image index: manifests, one a platform."""

    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    media_type: str = MediaType.OCI_INDEX
    schema_version: int = 2
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    _KNOWN = ("schemaVersion", "mediaType", "manifests", "annotations")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], media_type: str = "") -> Index:
        what = "image index"
        version, mt = _header(obj, what, media_type, MediaType.OCI_INDEX, MediaType.INDEXES)
        items = req(obj, "manifests", list, what)
        return cls(
            manifests=tuple(Descriptor.from_json(d, f"{what}: manifests[{i}]")
                            for i, d in enumerate(items)),
            annotations=str_map(obj, "annotations", what),
            media_type=mt, schema_version=version, extra=extra_fields(obj, cls._KNOWN),
        )

    def select(self, platform: Platform, where: str = "the image index") -> Descriptor:
        """The manifest for ``platform`` (an armv7 host falls back to v6, v5), or an error that
        lists the platforms there are."""
        want = platform.normalized()
        candidates = [d for d in self.manifests
                      if d.media_type in MediaType.MANIFESTS | MediaType.INDEXES or not d.media_type]
        for variant in platform.compatible_variants():
            for d in candidates:
                if d.platform is None:
                    continue
                got = d.platform.normalized()
                if (got.os, got.architecture, got.variant) == (want.os, want.architecture, variant):
                    return d
        if len(candidates) == 1 and candidates[0].platform is None:
            return candidates[0]  # an index without platforms (a plain OCI layout's index.json)
        available = sorted({str(d.platform) for d in candidates
                            if d.platform is not None and d.platform.os != "unknown"})
        raise ImageFormatError(
            f"{where} has no manifest for platform {platform}; "
            f"available: {', '.join(available) if available else 'none'}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version}
        # The OCI layout's index.json traditionally omits mediaType; keep what was read.
        put(out, "mediaType", self.media_type)
        out["manifests"] = [d.to_json() for d in self.manifests]
        put(out, "annotations", dict(self.annotations))
        out.update(self.extra)
        return out


def parse_manifest_or_index(data: bytes, content_type: str = "") -> Manifest | Index:
    """Parse bytes served as a manifest; the JSON's mediaType wins over the HTTP Content-Type."""
    obj = decode(data, "manifest")
    mt = obj.get("mediaType") or content_type.split(";")[0].strip()
    if mt in MediaType.INDEXES or (not mt or mt == "application/json") and "manifests" in obj:
        return Index.from_json(obj, mt if mt in MediaType.INDEXES else "")
    if mt in MediaType.MANIFESTS or (not mt or mt == "application/json") and "config" in obj:
        return Manifest.from_json(obj, mt if mt in MediaType.MANIFESTS else "")
    if obj.get("schemaVersion") == 1:
        raise ImageFormatError("Docker schema 1 manifests are not supported; push the image again "
                               "with a current docker or skopeo")
    raise ImageFormatError(f"unsupported manifest media type {mt!r}")


# Re-exported so that callers find every OCI value type in one module.
from builder.oci.imageconfig import ContainerConfig, Healthcheck, History, ImageConfig
