"""Values the layers package hands to the rest of pybuild: LayerRecord, UnpackResult, Change.

``LayerRecord`` is what the cache stores and the OCI code turns into a descriptor;
``Change`` is one line of a snapshot's changeset (diff.py makes them, tar.py writes them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from builder.digest import Digest

__all__ = [
    "Compression",
    "log_warning",
    "ChangeKind",
    "LayerRecord",
    "UnpackResult",
    "Change",
    "MEDIA_TYPE_TAR",
    "MEDIA_TYPE_TAR_GZIP",
    "MEDIA_TYPE_TAR_ZSTD",
]

Compression = Literal["gzip", "zstd", "uncompressed"]
ChangeKind = Literal["whiteout", "opaque", "entry"]

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """A layer blob as written: digests of its uncompressed tar and of the file itself."""

    diff_id: Digest  # sha256 of the uncompressed tar (goes in the image config's rootfs)
    digest: Digest  # sha256 of the blob as stored (goes in the manifest)
    size: int  # bytes of the blob as stored
    media_type: str


@dataclass(frozen=True, slots=True)
class UnpackResult:
    """What unpacking a layer learnt: the diff_id and size of the uncompressed tar, and
    anything it had to leave out (device nodes without privilege, forbidden xattrs)."""

    diff_id: Digest
    size: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One change found in a snapshot.

    ``path`` is relative, '/'-separated, without a leading './' (file system bytes kept
    through surrogateescape); "" is the snapshot's root (only for an opaque root).
    ``kind``: "entry" (a file, dir, link, node that exists in the snapshot), "whiteout"
    (``path`` was deleted) or "opaque" (directory ``path`` hides everything below it).
    """

    path: str
    kind: ChangeKind
    mode: int = 0  # full st_mode: file type and permission bits
    uid: int = 0
    gid: int = 0
    size: int = 0  # regular files only
    mtime_ns: int = 0
    devmajor: int = 0
    devminor: int = 0
    link_target: str | None = None  # symlinks
    xattrs: tuple[tuple[str, bytes], ...] = ()  # sorted by name, overlay's own excluded
    hardlink_to: str | None = None  # earlier path of the same inode in this snapshot
    source: Path | None = None  # where the entry lives on disk (to read its content)


def log_warning(module: str, message: str, *args: object) -> None:
    """``logging.getLogger(module).warning``, importing logging only when there is something
    to say: the import costs a few milliseconds at every start of the command."""
    import logging

    logging.getLogger(module).warning(message, *args)
