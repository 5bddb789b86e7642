"""The attestation manifest BuildKit attaches to an image in its index (BuildKit's
docs/attestations/attestation-storage.md, the image-manifest form its exporters wrote before
OCI artifacts): one in-toto statement per layer, an image config that names them, and the
index entry that ties the manifest to the image it describes.

- each layer is a statement's bytes, media type ``application/vnd.in-toto+json``, with the
  ``in-toto.io/predicate-type`` annotation;
- the config is an image config for platform ``unknown/unknown`` whose diff_ids are the
  statements' digests, so that tools that pull every manifest of an index see an image
  that nothing can run;
- the index entry has that platform too, and the annotations
  ``vnd.docker.reference.type: attestation-manifest`` and ``vnd.docker.reference.digest``
  (the image manifest's digest).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from builder.digest import Digest
from builder.oci.image import ImageSpec, store_blob
from builder.oci.types import Descriptor, ImageConfig, Manifest, MediaType, decode, encode

__all__ = ["INTOTO_MEDIA_TYPE", "REFERENCE_DIGEST", "REFERENCE_TYPE", "attestation_manifest",
           "entry_annotations", "is_attestation", "statement_bytes"]

INTOTO_MEDIA_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "in-toto.io/predicate-type"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """A statement as a layer holds it: compact JSON in the statement's own key order (Go's
    json.Marshal of BuildKit's Statement writes no spaces either)."""
    return encode(dict(statement))


def _config_bytes(layers: Sequence[Descriptor]) -> bytes:
    """The image config BuildKit writes for an attestation manifest, field for field."""
    return encode({"architecture": "unknown", "os": "unknown", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]}})


def attestation_manifest(statements: Sequence[tuple[str, bytes]], *, blob_dir: Path) -> ImageSpec:
    """The attestation manifest of ``statements`` ((predicate type, statement bytes)), its
    blobs written into ``blob_dir``; an ImageSpec, so that archives and pushes take it as
    they take an image."""
    layers = []
    paths: dict[Digest, Path] = {}
    for predicate_type, data in statements:
        digest = store_blob(blob_dir, data)
        layers.append(Descriptor(INTOTO_MEDIA_TYPE, digest, len(data),
                                 annotations={PREDICATE_TYPE: predicate_type}))
        paths[digest] = blob_dir / digest.algorithm / digest.hex
    config_bytes = _config_bytes(layers)
    config_digest = store_blob(blob_dir, config_bytes)
    manifest = Manifest(MediaType.OCI_MANIFEST,
                        Descriptor(MediaType.OCI_CONFIG, config_digest, len(config_bytes)),
                        tuple(layers))
    manifest_bytes = encode(manifest.to_json())
    store_blob(blob_dir, manifest_bytes)
    config = ImageConfig.from_json(decode(config_bytes, "attestation config"))

    def source(digest: Digest) -> Path:
        return paths.get(digest) or blob_dir / digest.algorithm / digest.hex

    return ImageSpec(config, config_bytes, manifest, manifest_bytes, source)


def entry_annotations(target: Digest) -> dict[str, str]:
    """The annotations of an attestation manifest's entry in the index."""
    return {REFERENCE_DIGEST: str(target), REFERENCE_TYPE: ATTESTATION_MANIFEST}


def is_attestation(desc: Descriptor) -> bool:
    """Whether an index entry is an attestation manifest (to be skipped by a puller)."""
    return desc.annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST

