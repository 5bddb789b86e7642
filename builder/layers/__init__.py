"""Everything between a directory of changes and a layer tarball, and back.

A *snapshot* is a directory in overlayfs upper-dir format (whiteouts are 0:0 character
devices, opaque directories carry ``trusted.overlay.opaque=y`` or ``user.overlay.opaque=y``),
usable directly as an overlay lower dir; an overlay upper dir after a step is a snapshot.

* ``diff.changes(upper)``: a snapshot as ordered ``Change`` values;
* ``tar.write_layer(snapshot, out)``: the deterministic layer blob and its ``LayerRecord``;
  ``tar.write_tree_tar(root, fileobj)``: a plain tar of a flattened tree;
* ``unpack.unpack_layer(stream, dest)`` / ``unpack_blob(path, dest)``: safe unpacking, as a
  snapshot or applied onto a flat tree;
* ``compress``: compression by magic bytes, ``CompressingWriter``, media types.

This package imports nothing from ``builder.oci`` or ``builder.executor``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.lazy import exports

if TYPE_CHECKING:
    from builder.layers.compress import (
        CompressingWriter,
        compression_for_media_type,
        detect_compression,
        media_type_for,
        open_decompressed,
    )
    from builder.layers.diff import changes, walk_tree
    from builder.layers.paths import clean_name, secure_join
    from builder.layers.tar import write_layer, write_tree_tar
    from builder.layers.types import (
        MEDIA_TYPE_TAR,
        MEDIA_TYPE_TAR_GZIP,
        MEDIA_TYPE_TAR_ZSTD,
        Change,
        Compression,
        LayerRecord,
        UnpackResult,
    )
    from builder.layers.unpack import unpack_blob, unpack_layer

__all__ = [
    "Change",
    "Compression",
    "CompressingWriter",
    "LayerRecord",
    "MEDIA_TYPE_TAR",
    "MEDIA_TYPE_TAR_GZIP",
    "MEDIA_TYPE_TAR_ZSTD",
    "UnpackResult",
    "changes",
    "clean_name",
    "compression_for_media_type",
    "detect_compression",
    "media_type_for",
    "open_decompressed",
    "secure_join",
    "unpack_blob",
    "unpack_layer",
    "walk_tree",
    "write_layer",
    "write_tree_tar",
]

# Each name is loaded from its module on first use: a build that only writes layers does
# not load the unpacker (and tarfile with it), a step with gzip layers not zstandard.
_HOME = {
    "CompressingWriter": "compress", "compression_for_media_type": "compress",
    "detect_compression": "compress", "media_type_for": "compress",
    "open_decompressed": "compress", "changes": "diff", "walk_tree": "diff",
    "clean_name": "paths", "secure_join": "paths", "write_layer": "tar",
    "write_tree_tar": "tar", "MEDIA_TYPE_TAR": "types", "MEDIA_TYPE_TAR_GZIP": "types",
    "MEDIA_TYPE_TAR_ZSTD": "types", "Change": "types", "Compression": "types",
    "LayerRecord": "types", "UnpackResult": "types", "unpack_blob": "unpack",
    "unpack_layer": "unpack",
}


__getattr__ = exports(__name__, _HOME)
