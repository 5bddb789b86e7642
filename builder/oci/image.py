"""ImageSpec: one finished single-platform image (config + manifest bytes, layer descriptors) and
where its blobs live; ``build_image`` makes one from an ImageConfig and layer files.

The bytes of the config and manifest are kept as written, so their digests never drift; blobs
stay on disk in the build's store and are reached through ``blob_path``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from builder.digest import Digest, sha256_bytes
from builder.errors import LayerError
from builder.fsutil import make_temp_file
from builder.oci.types import (
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    Manifest,
    MediaType,
    Platform,
    decode,
    encode,
    parse_manifest_or_index,
)

__all__ = ["ImageSpec", "IndexSpec", "ResolvedImage", "build_image", "convert_layer_media", "image_from_manifest", "store_blob"]

_TO_DOCKER = {
    MediaType.OCI_LAYER: MediaType.DOCKER_LAYER,
    MediaType.OCI_LAYER_GZIP: MediaType.DOCKER_LAYER_GZIP,
    MediaType.OCI_LAYER_NONDIST_GZIP: MediaType.DOCKER_FOREIGN_LAYER,
}
_TO_OCI = {v: k for k, v in _TO_DOCKER.items()}


@dataclass(frozen=True)
class ImageSpec:
    """An image's config and manifest, as values and as the bytes written."""

    config: ImageConfig
    config_bytes: bytes
    manifest: Manifest
    manifest_bytes: bytes
    blob_source: Callable[[Digest], Path] = field(repr=False, compare=False)

    @property
    def config_digest(self) -> Digest:
        return self.manifest.config.digest

    @property
    def manifest_digest(self) -> Digest:
        return sha256_bytes(self.manifest_bytes)

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers

    @property
    def platform(self) -> Platform:
        c = self.config
        return Platform(c.os, c.architecture, c.variant, c.os_version, c.os_features)

    def manifest_descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(self.manifest.media_type, self.manifest_digest, len(self.manifest_bytes),
                          annotations=dict(annotations or {}), platform=self.platform)

    def blob_path(self, digest: Digest) -> Path:
        return self.blob_source(digest)

    def blobs(self) -> Iterable[tuple[Descriptor, bytes | Path]]:
        """Every blob of the image except the manifest: config bytes, then layer files."""
        yield self.manifest.config, self.config_bytes
        for layer in self.layers:
            yield layer, self.blob_path(layer.digest)


@dataclass(frozen=True)
class ResolvedImage:
    """A single-platform image found in a layout, an archive or a registry."""

    manifest_digest: Digest
    manifest: Manifest
    manifest_bytes: bytes
    config: ImageConfig
    config_bytes: bytes
    # what the reference resolved to, when that was an index (the platform's manifest
    # was then chosen in it): the digest BuildKit pins and names in provenance
    resolved_digest: Digest | None = None


def convert_layer_media(media_type: str, media: Literal["oci", "docker"]) -> str:
    """A layer's media type in the other family; zstd has no docker name and stays OCI, as in
    BuildKit."""
    table = _TO_DOCKER if media == "docker" else _TO_OCI
    return table.get(media_type, media_type)


def store_blob(blob_dir: Path, data: bytes) -> Digest:
    """Write ``data`` as ``blob_dir/sha256/<hex>`` (aside, synced, then renamed) unless it is
    there. Synced: the tags and memo records that name a manifest or config are written
    durably after it, and a blob left empty by a power cut would be taken as present."""
    digest = sha256_bytes(data)
    dest = blob_dir / digest.algorithm / digest.hex
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp_file(dest.parent, ".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            os.unlink(tmp)
            raise
    return digest


@dataclass(frozen=True)
class IndexSpec:
    """An image index made by a build for several platforms: one entry per image, each with
    its platform, as BuildKit's exporter writes it."""

    images: tuple[ImageSpec, ...]
    manifest_bytes: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, images: Iterable[ImageSpec], annotations: Mapping[str, str] | None = None, *,
           entries: Mapping[Digest, Mapping[str, str]] | None = None) -> IndexSpec:
        """``entries``: annotations of some manifests' entries, by manifest digest (an
        attestation manifest's, ``oci.attestation.entry_annotations``)."""
        images = tuple(images)
        entries = entries or {}
        index = Index(manifests=tuple(i.manifest_descriptor(entries.get(i.manifest_digest))
                                      for i in images),
                      annotations=dict(annotations or {}), media_type=MediaType.OCI_INDEX)
        return cls(images, encode(index.to_json()), dict(annotations or {}))

    @property
    def manifest_digest(self) -> Digest:
        return sha256_bytes(self.manifest_bytes)

    def manifest_descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(MediaType.OCI_INDEX, self.manifest_digest, len(self.manifest_bytes),
                          annotations=dict(annotations or {}))


def build_image(
    config: ImageConfig,
    layers: list[tuple[Descriptor, Path | None]],
    *,
    blob_dir: Path,
    media: Literal["oci", "docker"] = "oci",
    annotations: Mapping[str, str] | None = None,
    blob_source: Callable[[Digest], Path] | None = None,
) -> ImageSpec:
    """Serialise ``config`` and a manifest over ``layers`` into ``blob_dir/sha256/``.

    Each layer is its descriptor (digest and size of the compressed blob) and the file holding
    that blob, or None for ``blob_source(digest)`` (called when the blob is read: it may make
    the file first), else ``blob_dir``'s file; the config's ``rootfs.diff_ids`` must already
    name one diff id per layer.
    """
    if media not in ("oci", "docker"):
        raise ValueError(f"media must be 'oci' or 'docker', not {media!r}")
    if len(config.diff_ids) != len(layers):
        raise LayerError(f"the image config lists {len(config.diff_ids)} diff ids but "
                         f"{len(layers)} layers were given")
    descs = []
    paths: dict[Digest, Path] = {}
    for desc, path in layers:
        mt = convert_layer_media(desc.media_type, media)
        if mt not in MediaType.LAYERS:
            raise LayerError(f"{desc.digest}: {mt!r} is not a layer media type")
        descs.append(desc.replace(media_type=mt, platform=None))
        if path is not None:
            paths[desc.digest] = Path(path)
    config_bytes = config.to_bytes()
    config_digest = store_blob(blob_dir, config_bytes)
    config_mt = MediaType.OCI_CONFIG if media == "oci" else MediaType.DOCKER_CONFIG
    manifest = Manifest(
        media_type=MediaType.OCI_MANIFEST if media == "oci" else MediaType.DOCKER_MANIFEST,
        config=Descriptor(config_mt, config_digest, len(config_bytes)),
        layers=tuple(descs),
        # Docker schema 2 has no annotations field.
        annotations=dict(annotations or {}) if media == "oci" else {},
    )
    manifest_bytes = encode(manifest.to_json())
    store_blob(blob_dir, manifest_bytes)
    return ImageSpec(config, config_bytes, manifest, manifest_bytes,
                     _blob_source(blob_dir, paths, blob_source))


def image_from_manifest(manifest_bytes: bytes, blob_source: Callable[[Digest], Path]) -> ImageSpec:
    """An ImageSpec over an existing manifest whose blobs ``blob_source`` can find (a layout,
    a pulled image)."""
    manifest = parse_manifest_or_index(manifest_bytes)
    if not isinstance(manifest, Manifest):
        raise ImageFormatError("expected an image manifest, found an index")
    config_path = blob_source(manifest.config.digest)
    try:
        config_bytes = config_path.read_bytes()
    except OSError as exc:
        raise ImageFormatError(f"image config {manifest.config.digest} is missing: {exc}") from None
    if sha256_bytes(config_bytes) != manifest.config.digest:
        raise ImageFormatError(f"image config {manifest.config.digest} does not match its digest")
    config = ImageConfig.from_json(decode(config_bytes, "image config"))
    return ImageSpec(config, config_bytes, manifest, manifest_bytes, blob_source)


def _blob_source(blob_dir: Path, layers: dict[Digest, Path],
                 fallback: Callable[[Digest], Path] | None) -> Callable[[Digest], Path]:
    def source(digest: Digest) -> Path:
        path = layers.get(digest)
        if path is not None:
            return path
        return fallback(digest) if fallback is not None else blob_dir / digest.algorithm / digest.hex
    return source
