"""The local image store: names (tags) pointing at manifests whose blobs are in the store.

A built image lands here under its `-t` names; `FROM` of such a name uses it without a
network request. Names are kept normalised (docker.io/library/x:latest).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cache.store import Store
from .errors import UsageError

__all__ = ["ImageStore"]


class ImageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def normalize(name: str) -> str:
        from .reference import ImageRef, InvalidReference

        try:
            return str(ImageRef.parse(name))
        except (InvalidReference, ValueError) as exc:
            raise UsageError(f"invalid image name {name!r}: {exc}") from None

    def tag(self, name: str, image: Any) -> None:
        self.store.put_ref(self.normalize(name), {
            "manifest": str(image.manifest_digest),
            "config": str(image.config_digest),
        })

    def tag_many(self, names: Sequence[str], image: Any) -> None:
        normalized = [self.normalize(n) for n in names]  # all valid before any is written
        for name in normalized:
            self.tag(name, image)


def import_rootfs(store: Store, source: str, name: str, *, message: str | None = None) -> Any:
    """`pybuild import`: one layer made from a root filesystem (a folder or a tar), like
    `docker import`; the image is stored under ``name``."""
    import datetime as _dt
    import tarfile
    from pathlib import Path

    from .cache.store import LayerBlob, remove_tree
    from .export import make_image
    from .layers.tar import write_layer
    from .solve import FsState, LayerRef, StageResult
    from .cache.keys import base_key
    from .config import HistoryEntry, ImageState

    normalized = ImageStore.normalize(name)
    path = Path(source)
    if not path.exists():
        raise UsageError(f"cannot import {source}: no such file or folder")
    if path.is_dir():
        out = store.tempfile("layer-")
        rec = write_layer(path, out, compression="gzip")
        diff_id, digest, size, media = rec.diff_id, rec.digest, rec.size, rec.media_type
        store.put_blob_file(out, digest)
    else:
        diff_id, digest, size, media = _tar_as_layer(store, path, source)
    blob = LayerBlob(diff_id, digest, size, media)
    store.add_layer_blob(blob)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = ImageState(history=(HistoryEntry("", empty_layer=False, comment=message or
                                             f"Imported from {path.name}", created=now),))
    result = StageResult(stage=None, fs=FsState(base_key(manifest_digest=None),  # type: ignore[arg-type]
                                                (LayerRef(diff_id, blob),)),
                         image=state, base=None)
    # Kept as it came; a build or an export compresses it when it needs to.
    image = make_image(store, result, compression="uncompressed")
    ImageStore(store).tag(normalized, image)
    return image


def _tar_as_layer(store: Store, path: Any, source: str) -> tuple[Any, Any, int, str]:
    """A root filesystem tar becomes the layer as it is (as `docker import` does): one pass
    that decompresses it and hashes it. It is kept uncompressed (its digest is its diff_id);
    an export compresses it once, when it is first asked for."""
    import hashlib
    import tarfile

    from .digest import Digest
    from .layers.compress import CompressingWriter, open_decompressed

    try:
        with tarfile.open(path) as probe:
            probe.next()
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot import {source}: not a tar archive ({exc})") from None
    out = store.tempfile("layer-")
    h = hashlib.sha256()
    with open(path, "rb") as raw, open_decompressed(raw) as tar, open(out, "wb") as blob:
        with CompressingWriter(blob, "uncompressed") as writer:
            while chunk := tar.read(1 << 20):
                h.update(chunk)
                writer.write(chunk)
        media = writer.media_type
    digest, size = store.put_blob_file(out)
    return Digest.sha256(h.hexdigest()), digest, size, media
