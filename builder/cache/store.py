"""The content-addressed store: blobs, unpacked snapshots, the cache index, image names.

Layout under the root (``--root``, ``PYBUILD_ROOT``, or ``$XDG_DATA_HOME/pybuild``)::

    blobs/sha256/<hex>          compressed layers, configs, manifests (by digest)
    snapshots/<diff_id hex>/    a layer unpacked in overlay upper-dir form, usable as a lowerdir;
                                a step's plain tar (digest = diff_id) is kept as this only and
                                made into a blob when first read (``layer_file``)
    layers/<diff_id hex>.json   the blobs known for a diff_id: {compression: descriptor}
    index/<key hex>.json        cache key -> the step's result (written last)
    usage/<key hex>             one byte appended per cache hit: size = hits, mtime = last use
    refs/<sha256 of name>.json  a base image reference -> its resolved manifest digest
    warm/<key>.memo             memos of fully cached builds, replayed by builder.warm (derived:
                                checked against the files above before use, dropped by prune)
    leases/<pid>-<ns>-<rand>    what each live process holds (builder.cache.lease)
    locks/<name>.lock           flock files
    tmp/                        work directories and files being written

Every write goes to tmp/ first and is renamed into place, so a crash at any moment
leaves either the old state or the new one; the index entry that points at a
snapshot or blob is written only after they are complete. What a killed process left in
tmp/ is removed by the next process that opens the store (see builder.cache.lease).

A Store opened with ``track=True`` (builds) lists every index entry, snapshot and blob it
touches in its process lease before using it, so `pybuild cache prune` never removes
what a running build holds.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..digest import Digest, canonical_json, sha256_bytes, sha256_stream
from ..errors import CacheError
from ..fsutil import make_temp_dir, make_temp_file
from .lease import process_lease
from .paths import count_hit, default_root

__all__ = ["LayerBlob", "Store", "default_root", "snapshot_changed"]


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """One compressed (or not) form of a layer: what a manifest's layer descriptor needs."""

    diff_id: Digest
    digest: Digest
    size: int
    media_type: str


SUBDIRS = ("blobs/sha256", "snapshots", "layers", "index", "usage", "refs", "tmp", "locks", "leases")


class Store:
    def __init__(self, root: Path, *, track: bool = True, clean: bool = True) -> None:
        """``track``: list what is used in this process's lease (builds; cache commands
        that inspect the store do not). ``clean``: remove what dead processes left in tmp/."""
        self.root = Path(root)
        try:
            if not (self.root / "leases").is_dir():
                for sub in SUBDIRS:
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
            self.lease = process_lease(self.root)
        except OSError as exc:
            raise CacheError(f"cannot use store {self.root}: {exc.strerror}",
                             hint="set --root or PYBUILD_ROOT to a writable folder") from exc
        self._track = track
        if clean:
            self.clean_stale_tmp()

    def _hold(self, kind: str, hexd: str) -> None:
        if self._track:
            self.lease.hold(kind, hexd)

    def clean_stale_tmp(self) -> list[Path]:
        """Remove tmp/ entries (and leases) left by processes that died; returns them."""
        from .lease import live_leases, stale_tmp_entries

        stale = stale_tmp_entries(self.root, live_leases(self.root))
        for path in stale:
            remove_tree(path)
        return stale

    # -- temporary space ---------------------------------------------------------
    def tempdir(self, prefix: str = "work-") -> Path:
        return Path(make_temp_dir(self.root / "tmp", prefix))

    def tempfile(self, prefix: str = "file-") -> Path:
        fd, name = make_temp_file(self.root / "tmp", prefix)
        os.close(fd)
        return Path(name)

    # -- blobs -------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        self._hold("blob", digest.hex)
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def has_layer(self, digest: Digest) -> bool:
        """Whether blob ``digest`` can be read: its file, or a step's plain layer tar, which
        the store keeps as its snapshot only (that tar's digest is its diff_id)."""
        return self.has_blob(digest) or self.has_snapshot(digest)

    def layer_file(self, digest: Digest) -> Path:
        """The file of blob ``digest``, made first when it is a plain layer tar kept as its
        snapshot only: written aside, checked against the digest, then kept as a blob. A
        step's layer tar is made when an export, a push or a save first reads it, as BuildKit
        makes a layer's blob only when one is needed."""
        path = self.blob_path(digest)
        if path.is_file() or not self.has_snapshot(digest):
            return path
        from ..layers.tar import write_layer

        tmp = self.tempfile("layer-")
        rec = write_layer(self.snapshot_path(digest), tmp, compression="uncompressed")
        if rec.digest != digest:
            tmp.unlink(missing_ok=True)
            raise snapshot_changed(digest, rec.digest)
        self.put_blob_file(tmp, digest, verified=True)
        self.add_layer_blob(LayerBlob(digest, digest, rec.size, rec.media_type))
        return path

    def snapshot_untouched(self, diff_id: Digest) -> bool:
        """Whether nothing below a step's snapshot changed since it was adopted: no entry's
        ctime is newer than the snapshot folder's own, which its rename into place set after
        its tar was hashed. Any doubt answers False (a file a later COPY linked from it has a
        newer ctime too), and the caller hashes the tar again."""
        root = str(self.snapshot_path(diff_id))
        try:
            limit = os.lstat(root).st_ctime_ns
            folders = [root]
            while folders:
                with os.scandir(folders.pop()) as entries:
                    for entry in entries:
                        if entry.stat(follow_symlinks=False).st_ctime_ns > limit:
                            return False
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
        except OSError:
            return False
        return True

    def put_blob_file(self, path: Path, digest: Digest | None = None, *,
                      verified: bool = False) -> tuple[Digest, int]:
        """Move a finished file into the blob store (verifying it when a digest is given,
        unless ``verified``: the caller hashed exactly these bytes as it wrote them)."""
        if verified and digest is not None:
            actual, size = digest, os.stat(path).st_size
        else:
            with open(path, "rb") as f:
                actual, size = sha256_stream(f)
        if digest is not None and actual != digest:
            path.unlink(missing_ok=True)
            raise CacheError(f"blob {digest} has the wrong content (got {actual})")
        dest = self.blob_path(actual)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        return actual, size

    def put_blob_bytes(self, data: bytes) -> tuple[Digest, int]:
        digest = sha256_bytes(data)
        dest = self.blob_path(digest)
        if not dest.exists():
            self._write_atomic(dest, data)
        return digest, len(data)

    def read_blob(self, digest: Digest) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise CacheError(f"blob {digest} is missing from the store {self.root}",
                             hint="run `pybuild cache verify --repair` and build again") from exc

    # -- snapshots ----------------------------------------------------------------
    def snapshot_path(self, diff_id: Digest) -> Path:
        self._hold("diff", diff_id.hex)
        return self.root / "snapshots" / diff_id.hex

    def has_snapshot(self, diff_id: Digest) -> bool:
        return self.snapshot_path(diff_id).is_dir()

    def put_snapshot_dir(self, directory: Path, diff_id: Digest) -> Path:
        """Adopt a finished directory as the snapshot of diff_id (one already there wins)."""
        dest = self.snapshot_path(diff_id)
        if dest.is_dir():
            remove_tree(directory)
            return dest
        try:
            os.rename(directory, dest)
        except OSError:
            if not dest.is_dir():
                raise
            remove_tree(directory)
        return dest

    # -- layers: diff_id -> its blobs ------------------------------------------------
    def layer_blobs(self, diff_id: Digest) -> dict[str, LayerBlob]:
        doc = self._read_json(self.root / "layers" / f"{diff_id.hex}.json") or {}
        return {
            media: LayerBlob(diff_id, Digest.parse(d["digest"]), int(d["size"]), media)
            for media, d in doc.items()
        }

    def add_layer_blob(self, blob: LayerBlob) -> None:
        path = self.root / "layers" / f"{blob.diff_id.hex}.json"
        with self.lock(f"layer-{blob.diff_id.hex}"):
            doc = self._read_json(path) or {}
            doc[blob.media_type] = {"digest": str(blob.digest), "size": blob.size}
            # Not fsynced: on ext4 that flushes every file written since (a 250 MB blob:
            # 0.25 s), and a lost entry only means a blob is made again.
            self._write_atomic(path, canonical_json(doc), durable=False)

    # -- the cache index -------------------------------------------------------------
    def record_path(self, key: Digest) -> Path:
        return self.root / "index" / f"{key.hex}.json"

    def get_record(self, key: Digest) -> dict[str, Any] | None:
        self._hold("key", key.hex)
        return self._read_json(self.record_path(key))

    def put_record(self, key: Digest, record: dict[str, Any]) -> None:
        self._hold("key", key.hex)
        record = {**record, "created": record.get("created", time.time())}
        # Not synced: the layer it names is, before it; a record a power cut leaves empty or
        # cut reads as absent (``_read_json``), so the worst case is a step that runs again.
        self._write_atomic(self.record_path(key), canonical_json(record), durable=False)

    def touch_record(self, key: Digest) -> None:
        """Count a cache hit (``paths.count_hit``)."""
        count_hit(self.root, key.hex)

    # -- references (base images, local names) --------------------------------------
    def ref_path(self, name: str) -> Path:
        return self.root / "refs" / f"{sha256_bytes(name.encode()).hex}.json"

    def get_ref(self, name: str) -> dict[str, Any] | None:
        return self._read_json(self.ref_path(name))

    def put_ref(self, name: str, doc: dict[str, Any], *, durable: bool = True) -> None:
        """``durable=False`` for a memo that can be made again (a lost one reads as absent);
        a name the user gave stays synced."""
        self._write_atomic(self.ref_path(name), canonical_json({"name": name, **doc}),
                           durable=durable)

    # -- locks ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between processes sharing the store (flock: released on death)."""
        path = self.root / "locks" / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- helpers ----------------------------------------------------------------------
    def _write_atomic(self, dest: Path, data: bytes, *, durable: bool = True) -> None:
        tmp = self.tempfile(prefix=".w-")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            with open(path, "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # A damaged entry is treated as absent; `cache verify` reports it.
            return None


def snapshot_changed(diff_id: Digest, got: Digest) -> CacheError:
    """The error for a snapshot whose files no longer give the layer tar it was kept for."""
    return CacheError(f"the snapshot of layer {diff_id} no longer gives its tar (its files make {got})",
                      hint="run `pybuild cache verify --repair` and build again")


def remove_tree(path: Path) -> None:
    """Remove a directory tree, including read-only folders a step may have left."""
    def onerror(func: Any, p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
        with contextlib.suppress(OSError):
            func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists() and not _remove_plain(path):
        import shutil  # what a plain walk could not remove (read-only folders, deep trees)

        shutil.rmtree(path, onerror=onerror)


def _remove_plain(path: Path | str, depth: int = 0) -> bool:
    """Remove a tree of plain writable folders (what most steps leave) without loading
    ``shutil``; False at the first thing that needs more, which ``shutil.rmtree`` finishes."""
    if depth > 64:
        return False
    try:
        with os.scandir(path) as listing:
            entries = list(listing)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not _remove_plain(entry.path, depth + 1):
                    return False
            else:
                os.unlink(entry.path)
        os.rmdir(path)
    except OSError:
        return False
    return True
