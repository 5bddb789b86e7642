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
    tmp = None
    try:
        if path.is_dir():
            tree = path
        else:
            tmp = store.tempdir("import-")
            try:
                with tarfile.open(path, "r:*") as tar:
                    tar.extractall(tmp, filter="tar" if hasattr(tarfile, "tar_filter") else None)
            except (tarfile.TarError, OSError) as exc:
                raise UsageError(f"cannot import {source}: not a tar archive ({exc})") from None
            tree = tmp
        out = store.tempfile("layer-")
        rec = write_layer(tree, out, compression="gzip")
        store.put_blob_file(out, rec.digest)
        blob = LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type)
        store.add_layer_blob(blob)
    finally:
        if tmp is not None:
            remove_tree(tmp)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = ImageState(history=(HistoryEntry("", empty_layer=False, comment=message or
                                             f"Imported from {path.name}", created=now),))
    result = StageResult(stage=None, fs=FsState(base_key(manifest_digest=None),  # type: ignore[arg-type]
                                                (LayerRef(rec.diff_id, blob),)),
                         image=state, base=None)
    image = make_image(store, result)
    ImageStore(store).tag(normalized, image)
    return image
