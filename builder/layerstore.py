"""Where a step's files meet the store: the snapshots below it as overlay lower folders
(unpacked from their blobs the first time), and its finished upper folder committed as a
layer -- hashed (or, where the snapshot alone cannot give its tar again, written as a
blob), made durable, and adopted as that layer's snapshot."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache.store import LayerBlob, Store, remove_tree
from .digest import Digest
from .errors import BuildError

if TYPE_CHECKING:
    from .layers.types import LayerRecord
    from .solve import LayerRef

__all__ = ["commit_layer", "ensure_snapshot", "lower_dirs"]


def ensure_snapshot(store: Store, layer: LayerRef) -> Path:
    """The unpacked snapshot of a layer, unpacking its blob (verified) the first time."""
    path = store.snapshot_path(layer.diff_id)
    if path.is_dir():
        return path
    with store.lock(f"unpack-{layer.diff_id.hex}"):
        if path.is_dir():
            return path
        if layer.blob is None:
            raise BuildError(f"layer {layer.diff_id} is missing from the store",
                             hint="run `pybuild cache verify --repair` and build again")
        from .layers.unpack import unpack_blob

        tmp = store.tempdir("unpack-")
        try:
            result = unpack_blob(store.blob_path(layer.blob.digest), tmp, mode="snapshot")
            if result.diff_id != layer.diff_id:
                raise BuildError(f"layer {layer.blob.digest} does not match its diff_id "
                                 f"{layer.diff_id} (got {result.diff_id})")
            return store.put_snapshot_dir(tmp, layer.diff_id)
        except BaseException:
            remove_tree(tmp)
            raise


def lower_dirs(store: Store, layers: Sequence[LayerRef]) -> list[Path]:
    """The snapshots of ``layers`` (bottom first) as overlay lower directories, top first.
    A layer that is there twice (two steps that made the same files, or nothing) is kept
    where it is highest: overlayfs refuses a folder twice, and the lower copy shows nothing
    the higher one does not decide already."""
    out: list[Path] = []
    seen: set[Digest] = set()
    for layer in reversed(layers):
        if layer.diff_id not in seen:
            seen.add(layer.diff_id)
            out.append(ensure_snapshot(store, layer))
    return out


def commit_layer(store: Store, upper: Path, *, source_date_epoch: int | None,
                 owner: Callable[[int, int], tuple[int, int]] | None) -> dict[str, Any]:
    """Adopt a step's finished upper folder as its layer's snapshot; the record fields of
    that layer. The layer is an uncompressed tar (its digest is its diff_id): compressing is
    for what leaves the store -- an archive, a push, a cache export -- and is done then. Nor,
    unless the snapshot alone cannot give that tar again (times clamped to an epoch, ids
    mapped), is the tar written: only hashed (``Store.layer_file`` makes it when read)."""
    if source_date_epoch is None and owner is None:
        rec = _hash_while_syncing(upper)
    else:
        from .executor.libc import syncfs
        from .layers.tar import write_layer

        tmp = store.tempfile("layer-")
        rec = write_layer(upper, tmp, compression="uncompressed",
                          source_date_epoch=source_date_epoch, owner=owner)
        store.put_blob_file(tmp, rec.digest, verified=True)
        store.add_layer_blob(LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type))
        # the blob is durable; so must the snapshot be before it is adopted (a snapshot
        # already there wins, and later steps mount it rather than unpack the blob)
        syncfs(upper)
    store.put_snapshot_dir(upper, rec.diff_id)
    return {"diff_id": str(rec.diff_id), "digest": str(rec.digest), "size": rec.size,
            "media_type": rec.media_type}


def _hash_while_syncing(upper: Path) -> LayerRecord:
    """The layer record of a step's upper folder, which then becomes the layer's only copy:
    made durable (syncfs) before it is adopted as a snapshot -- one already there wins -- and
    before a record names it. The sync waits on the disk and the hash on the CPU, so they run
    side by side; the step wrote everything before either starts."""
    from .executor.libc import syncfs
    from .layers.tar import hash_layer

    failed: list[BaseException] = []

    def sync() -> None:
        try:
            syncfs(upper)
        except BaseException as exc:  # noqa: BLE001 - handed to the step below
            failed.append(exc)

    syncing = threading.Thread(target=sync, name="syncfs", daemon=True)
    syncing.start()
    try:
        rec = hash_layer(upper)
    finally:
        syncing.join()
    if failed:
        raise failed[0]
    return rec
