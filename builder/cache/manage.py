"""Looking after the store: list the cache, measure it, verify it, prune it.

This owns the policies behind `pybuild cache ls|du|verify|prune`; the layout and the
write rules are builder.cache.store's, the lease protocol builder.cache.lease's.

What counts as referenced: a snapshot or blob named by an index record, and every blob
reachable from refs/ (base images and tagged images: manifest, config, layers). Anything
else (a layer whose record a killed build never wrote, another compression of a layer,
an untagged image's manifest) is unreferenced: not damage, and removed by any prune.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..digest import Digest, sha256_file
from ..errors import UsageError
from .lease import entry_lock, live_leases
from .store import Store, remove_tree

__all__ = ["CacheEntry", "PruneReport", "VerifyReport", "disk_usage", "list_entries",
           "parse_duration", "parse_size", "prune", "verify"]

_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One index record as `cache ls` shows it."""

    key: Digest
    step: str
    stage: str
    size: int
    created: float
    last_used: float
    hits: int
    diff_id: Digest | None = None
    blob: Digest | None = None


def _hexes(folder: Path, suffix: str = "") -> Iterator[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if suffix and not name.endswith(suffix):
            continue
        stem = name[: len(name) - len(suffix)] if suffix else name
        if _HEX.match(stem):
            yield stem


def list_entries(store: Store) -> list[CacheEntry]:
    """Every readable index record, least recently used first."""
    out = []
    for hexd in _hexes(store.root / "index", ".json"):
        path = store.root / "index" / f"{hexd}.json"
        try:
            st = path.stat()
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict):
            continue
        hits, used = 0, st.st_mtime
        with contextlib.suppress(OSError):
            ust = (store.root / "usage" / hexd).stat()
            hits, used = ust.st_size, max(used, ust.st_mtime)
        diff = blob = None
        with contextlib.suppress(KeyError, ValueError, TypeError):
            diff, blob = Digest.parse(rec["diff_id"]), Digest.parse(rec["digest"])
        out.append(CacheEntry(Digest.sha256(hexd), str(rec.get("step", "")), str(rec.get("stage", "")),
                              int(rec.get("size") or 0), float(rec.get("created") or st.st_mtime),
                              used, hits, diff, blob))
    out.sort(key=lambda e: (e.last_used, e.created, e.key.hex))
    return out


def _ref_blobs(store: Store) -> tuple[set[str], set[str]]:
    """(blob hexes, diff_id hexes) reachable from refs/: what names keep alive."""
    blobs: set[str] = set()
    diffs: set[str] = set()
    todo: list[str] = []
    for name in os.listdir(store.root / "refs"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            doc = json.loads((store.root / "refs" / name).read_bytes())
            todo.extend(str(doc[k]) for k in ("manifest", "config") if doc.get(k))
    while todo:
        try:
            digest = Digest.parse(todo.pop())
        except ValueError:
            continue
        if digest.hex in blobs:
            continue
        blobs.add(digest.hex)
        path = store.root / "blobs" / "sha256" / digest.hex
        try:
            if path.stat().st_size > (4 << 20):
                continue  # a layer, not a JSON document
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        for desc in [doc.get("config") or {}, *(doc.get("layers") or []), *(doc.get("manifests") or [])]:
            if isinstance(desc, dict) and desc.get("digest"):
                todo.append(str(desc["digest"]))
        for d in (doc.get("rootfs") or {}).get("diff_ids") or []:
            with contextlib.suppress(ValueError):
                diffs.add(Digest.parse(d).hex)
    return blobs, diffs


def _tree_size(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes below ``path``; a file with several links counts once across every call that
    shares ``seen`` (a COPY run again links unchanged files from its earlier snapshot)."""
    total = 0
    seen = set() if seen is None else seen
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# -- du ------------------------------------------------------------------------------

def disk_usage(store: Store) -> dict[str, tuple[int, int]]:
    """{category: (count, bytes)} for blobs, snapshots, index records, tmp."""
    blobs = [store.root / "blobs" / "sha256" / h for h in _hexes(store.root / "blobs" / "sha256")]
    snaps = [store.root / "snapshots" / h for h in _hexes(store.root / "snapshots")]
    index = list(_hexes(store.root / "index", ".json"))
    tmp = [Path(e.path) for e in os.scandir(store.root / "tmp")]
    linked: set[tuple[int, int]] = set()

    def size(p: Path) -> int:
        with contextlib.suppress(OSError):
            return p.stat().st_size if p.is_file() else _tree_size(p)
        return 0

    return {
        "blobs": (len(blobs), sum(size(p) for p in blobs)),
        "snapshots": (len(snaps), sum(_tree_size(p, linked) for p in snaps)),
        "index records": (len(index), sum(size(store.root / "index" / f"{h}.json") for h in index)),
        "tmp": (len(tmp), sum(size(p) for p in tmp)),
    }


# -- verify ----------------------------------------------------------------------------

@dataclass
class VerifyReport:
    """What `pybuild cache verify` checked, found damaged or unused, and repaired."""

    checked: dict[str, int] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)     # what is wrong, one line each
    unreferenced: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged or len(self.repaired) >= len(self.damaged)


def _snapshot_problem(store: Store, snap: Path, hexd: str) -> str | None:
    """Whether a snapshot still holds the layer diff_id ``hexd`` names.

    A step's snapshot re-tars to its diff_id; one made with SOURCE_DATE_EPOCH does so
    with its times clamped to the newest time in its blob; a base layer's snapshot
    (unpacked from someone else's tar, which ours need not equal byte for byte) must
    re-tar as its blob, unpacked again, does."""
    from ..layers.tar import write_layer

    tmp = store.tempfile("verify-")
    try:
        got = write_layer(snap, tmp, compression="uncompressed").diff_id
        if got.hex == hexd:
            return None
        blob = _layer_blob_path(store, hexd)
        if blob is None:
            return f"its files make {got} and no blob of it is left to compare"
        epoch = _blob_max_mtime(blob)
        if epoch is not None and write_layer(snap, tmp, compression="uncompressed",
                                             source_date_epoch=epoch).diff_id.hex == hexd:
            return None
        from ..layers.unpack import unpack_blob

        again = store.tempdir("verify-")
        try:
            if unpack_blob(blob, again, mode="snapshot").diff_id.hex != hexd:
                return None  # the blob is what is wrong; the blob check reports it
            expected = write_layer(again, tmp, compression="uncompressed").diff_id
        finally:
            remove_tree(again)
        return None if expected == got else f"its files differ from its layer ({got} != {expected})"
    finally:
        tmp.unlink(missing_ok=True)


def _layer_blob_path(store: Store, diff_hex: str) -> Path | None:
    for media in store.layer_blobs(Digest.sha256(diff_hex)).values():
        path = store.root / "blobs" / "sha256" / media.digest.hex
        if path.is_file():
            return path
    return None


def _blob_max_mtime(path: Path) -> int | None:
    import tarfile

    from ..layers.compress import open_decompressed

    try:
        with open(path, "rb") as raw, open_decompressed(raw) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            return max((int(m.mtime) for m in tar), default=0)
    except (OSError, tarfile.TarError, EOFError):
        return None


def verify(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check every blob against its digest, every snapshot against its diff_id, every
    index record's references; with ``repair``, drop what is broken and what points at it."""
    report = VerifyReport()
    bad_blobs: set[str] = set()
    bad_snaps: set[str] = set()
    blob_dir = store.root / "blobs" / "sha256"
    for name in sorted(os.listdir(blob_dir)):
        path = blob_dir / name
        if not _HEX.match(name):
            report.damaged.append(f"blob {name}: not a digest name")
            bad_blobs.add(name)
            continue
        try:
            actual, _ = sha256_file(path)
        except OSError as exc:
            report.damaged.append(f"blob sha256:{name}: unreadable ({exc.strerror})")
            bad_blobs.add(name)
            continue
        if actual.hex != name:
            report.damaged.append(f"blob sha256:{name}: content is {actual}")
            bad_blobs.add(name)
    report.checked["blobs"] = len(os.listdir(blob_dir))

    snap_dir = store.root / "snapshots"
    snaps = sorted(os.listdir(snap_dir))
    for name in snaps:
        path = snap_dir / name
        if not _HEX.match(name) or not path.is_dir():
            report.damaged.append(f"snapshot {name}: not a snapshot")
            bad_snaps.add(name)
            continue
        try:
            problem = _snapshot_problem(store, path, name)
        except Exception as exc:  # noqa: BLE001 - any failure to read it is damage to report
            problem = f"unreadable ({exc})"
        if problem:
            report.damaged.append(f"snapshot sha256:{name}: {problem}")
            bad_snaps.add(name)
    report.checked["snapshots"] = len(snaps)

    bad_records: list[str] = []
    referenced_blobs: set[str] = set()
    referenced_snaps: set[str] = set()
    index_dir = store.root / "index"
    names = sorted(os.listdir(index_dir))
    for name in names:
        hexd = name[:-5] if name.endswith(".json") else ""
        why = _record_problem(store, index_dir / name, hexd, bad_blobs, bad_snaps,
                              referenced_blobs, referenced_snaps)
        if why:
            report.damaged.append(f"index record {hexd or name}: {why}")
            bad_records.append(name)
    report.checked["index records"] = len(names)

    for name, doc in _layer_docs(store):
        for media, d in doc.items():
            hexd = str(d.get("digest", "")).partition(":")[2] if isinstance(d, dict) else ""
            if hexd in bad_blobs or not (blob_dir / hexd).is_file():
                report.unreferenced.append(f"layer {name}: {media} blob {hexd[:12] or '?'} is gone")

    ref_blobs, ref_diffs = _ref_blobs(store)
    for name in os.listdir(blob_dir):
        if name not in referenced_blobs and name not in ref_blobs and name not in bad_blobs:
            report.unreferenced.append(f"blob sha256:{name}")
    for name in snaps:
        if name not in referenced_snaps and name not in ref_diffs and name not in bad_snaps:
            report.unreferenced.append(f"snapshot sha256:{name}")

    if repair:
        for name in bad_records:
            _remove(index_dir / name)
            _remove(store.root / "usage" / name[:-5])
            report.repaired.append(f"dropped index record {name[:-5]}")
        for name in sorted(bad_blobs):
            _remove(blob_dir / name)
            report.repaired.append(f"dropped blob {name}")
        for name in sorted(bad_snaps):
            _remove_aside(store, snap_dir / name)
            report.repaired.append(f"dropped snapshot {name}")
        _drop_missing_layer_blobs(store)
    return report


def _record_problem(store: Store, path: Path, hexd: str, bad_blobs: set[str], bad_snaps: set[str],
                    referenced_blobs: set[str], referenced_snaps: set[str]) -> str | None:
    if not _HEX.match(hexd):
        return "not a key name"
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if not isinstance(rec, dict):
        return "not a record"
    if rec.get("empty"):
        return None
    try:
        diff, blob = Digest.parse(rec["diff_id"]), Digest.parse(rec["digest"])
    except (KeyError, ValueError, TypeError):
        return "no diff_id/digest"
    referenced_blobs.add(blob.hex)
    referenced_snaps.add(diff.hex)
    if blob.hex in bad_blobs:
        return f"its blob {blob} is damaged"
    if diff.hex in bad_snaps:
        return f"its snapshot {diff} is damaged"
    if blob != diff and not (store.root / "blobs" / "sha256" / blob.hex).is_file():
        # (a step's plain layer, whose digest is its diff_id, may be kept as its snapshot only)
        return f"its blob {blob} is missing"
    if not (store.root / "snapshots" / diff.hex).is_dir():
        return f"its snapshot {diff} is missing"
    return None


def _layer_docs(store: Store) -> Iterator[tuple[str, dict[str, Any]]]:
    for hexd in _hexes(store.root / "layers", ".json"):
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((store.root / "layers" / f"{hexd}.json").read_bytes())
            if isinstance(doc, dict):
                yield hexd, doc


def _drop_missing_layer_blobs(store: Store, gone: Iterable[str] = ()) -> None:
    """Remove from layers/<diff>.json the blobs that are no longer in the store."""
    gone_set = set(gone)
    for hexd, _ in list(_layer_docs(store)):
        path = store.root / "layers" / f"{hexd}.json"
        with store.lock(f"layer-{hexd}"):
            doc = store._read_json(path) or {}
            kept = {m: d for m, d in doc.items()
                    if isinstance(d, dict) and (h := str(d.get("digest", "")).partition(":")[2])
                    and h not in gone_set and (store.root / "blobs" / "sha256" / h).is_file()}
            if kept == doc:
                continue
            if kept:
                from ..digest import canonical_json

                store._write_atomic(path, canonical_json(kept))
            else:
                _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_aside(store: Store, path: Path) -> Path | None:
    """Rename an entry into tmp/ (atomic), to be deleted at leisure; None if it is gone."""
    aside = store.tempdir("trash-") / path.name
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        remove_tree(aside.parent)
        return None
    return aside.parent


# -- prune -----------------------------------------------------------------------------

@dataclass
class PruneReport:
    """What `pybuild cache prune` removed, kept and freed."""

    records: list[CacheEntry] = field(default_factory=list)
    kept_in_use: int = 0
    freed: int = 0
    removed_blobs: int = 0
    removed_snapshots: int = 0
    stale_tmp: int = 0


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Go's duration syntax (``90m``, ``1h30m``, ``24h``) plus days (``7d``), in seconds."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"invalid duration {text!r}", hint="use e.g. 30m, 24h, 1h30m or 7d")
    return total


def parse_size(text: str) -> int:
    """``512MB``, ``10g``, ``1.5GiB``, ``100000`` as bytes, as docker reads --keep-storage
    (k, m, g, t, p are powers of 1024)."""
    from ..parse_go import ram_in_bytes

    size = ram_in_bytes(text.strip())
    if size is None:
        raise UsageError(f"invalid size {text!r}", hint="use e.g. 500MB, 10GB or a number of bytes")
    return size


def _held(store: Store, kind: str, hexd: str) -> bool:
    # The pruning process's own lease does not count: it is not a build.
    line = f"{kind} {hexd}"
    return any(line in info.entries for info in live_leases(store.root, reap=False)
               if info.pid != os.getpid())


def prune(store: Store, *, all: bool = False, keep_storage: int | None = None,
          until: float | None = None, now: float | None = None) -> PruneReport:
    """Remove cache records least recently used first, then whatever no record or name
    still references. Without options only unreferenced data goes. ``until``: only
    records unused for that many seconds; ``keep_storage``: stop once blobs and snapshots
    fit in that many bytes. Nothing a live lease lists is touched."""
    now = time.time() if now is None else now
    report = PruneReport()
    report.stale_tmp = len(store.clean_stale_tmp())
    entries = list_entries(store)
    snap_sizes: dict[str, int] = {}

    def entry_cost(e: CacheEntry) -> int:
        if e.diff_id is None:
            return 0
        if e.diff_id.hex not in snap_sizes:
            snap_sizes[e.diff_id.hex] = _tree_size(store.root / "snapshots" / e.diff_id.hex)
        kept = e.blob is not None and (store.root / "blobs" / "sha256" / e.blob.hex).is_file()
        return (e.size if kept else 0) + snap_sizes[e.diff_id.hex]

    candidates: list[CacheEntry] = []
    if all or keep_storage is not None or until is not None:
        candidates = [e for e in entries if until is None or e.last_used < now - until]
    used = sum(c for _, c in disk_usage(store).values()) if keep_storage is not None else 0
    removed: set[str] = set()
    for e in candidates:
        if keep_storage is not None and not all and used <= keep_storage:
            break
        if _drop_record(store, e):
            removed.add(e.key.hex)
            report.records.append(e)
            used -= entry_cost(e)
        else:
            report.kept_in_use += 1

    if removed:
        # Memos of fully cached builds (builder.warm) may name what went: derived, so dropped.
        shutil.rmtree(store.root / "warm", ignore_errors=True)
    remaining = [e for e in entries if e.key.hex not in removed]
    keep_blobs, keep_diffs = _ref_blobs(store)
    if all:
        # Base layers' snapshots are derived: unpacked again when needed. Not so a named
        # image's layer kept as its snapshot only (no blob of that digest, its diff_id).
        keep_diffs = {h for h in keep_diffs
                      if h in keep_blobs and not (store.root / "blobs" / "sha256" / h).is_file()}
    keep_blobs |= {e.blob.hex for e in remaining if e.blob}
    keep_diffs |= {e.diff_id.hex for e in remaining if e.diff_id}
    gone_blobs: list[str] = []
    for hexd in list(_hexes(store.root / "snapshots")):
        if hexd not in keep_diffs:
            freed = _drop_data(store, "diff", hexd, store.root / "snapshots" / hexd)
            if freed is not None:
                report.removed_snapshots += 1
                report.freed += freed
    for hexd in list(_hexes(store.root / "blobs" / "sha256")):
        if hexd not in keep_blobs:
            freed = _drop_data(store, "blob", hexd, store.root / "blobs" / "sha256" / hexd)
            if freed is not None:
                report.removed_blobs += 1
                report.freed += freed
                gone_blobs.append(hexd)
    _drop_missing_layer_blobs(store, gone_blobs)
    for hexd in _hexes(store.root / "usage"):
        if not (store.root / "index" / f"{hexd}.json").exists():
            _remove(store.root / "usage" / hexd)
    return report


def _drop_record(store: Store, e: CacheEntry) -> bool:
    """Remove one index record unless a live build holds it (or is writing it)."""
    with entry_lock(store.root, e.key.hex, blocking=False) as got:
        if not got or _held(store, "key", e.key.hex):
            return False
        with store.lock(f"step-{e.key.hex}"):
            _remove(store.root / "index" / f"{e.key.hex}.json")
    _remove(store.root / "usage" / e.key.hex)
    return True


def _drop_data(store: Store, kind: str, hexd: str, path: Path) -> int | None:
    """Remove a snapshot or blob unless a live build holds it; returns the bytes freed."""
    with entry_lock(store.root, hexd, blocking=False) as got:
        if not got or _held(store, kind, hexd):
            return None
        size = path.stat().st_size if path.is_file() else _tree_size(path)
        if kind == "blob":
            _remove(path)
            return size
        trash = _remove_aside(store, path)
    if trash is not None:
        remove_tree(trash)
    return size
