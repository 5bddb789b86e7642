"""The store's upkeep: leases, stale tmp/ clean-up, ls/du, verify (--repair), prune."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.cache import manage
from builder.cache.lease import live_leases
from builder.cache.store import LayerBlob, Store
from builder.digest import Digest
from builder.errors import UsageError
from builder.layers.tar import write_layer


def _step(store: Store, tmp: Path, name: str, content: str, *, created: float | None = None) -> Digest:
    """What the solver does for a step that made a layer: blob, snapshot, record (last)."""
    upper = store.tempdir("upper-")
    (upper / name).write_text(content)
    out = store.tempfile("layer-")
    rec = write_layer(upper, out, compression="gzip")
    store.put_blob_file(out, rec.digest)
    store.add_layer_blob(LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type))
    store.put_snapshot_dir(upper, rec.diff_id)
    key = Digest.sha256(rec.diff_id.hex[::-1])
    store.put_record(key, {"diff_id": str(rec.diff_id), "digest": str(rec.digest), "size": rec.size,
                           "media_type": rec.media_type, "step": f"COPY {name} /", "stage": "s",
                           "created": created or time.time()})
    return key


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_ls_counts_hits_and_orders_by_last_use(store: Store, tmp_path: Path) -> None:
    a = _step(store, tmp_path, "a", "1")
    b = _step(store, tmp_path, "b", "2")
    old = time.time() - 3600
    for k in (a, b):
        os.utime(store.root / "index" / f"{k.hex}.json", (old, old))
    store.touch_record(a)
    store.touch_record(a)
    entries = manage.list_entries(store)
    assert [e.key for e in entries] == [b, a]
    assert (entries[0].hits, entries[1].hits) == (0, 2)
    assert entries[1].last_used > old + 3000
    assert entries[0].step == "COPY b /"
    usage = manage.disk_usage(store)
    assert usage["index records"][0] == 2 and usage["blobs"][0] == 2 and usage["snapshots"][0] == 2
    # a file two snapshots share (a COPY run again links unchanged files) counts once
    snaps = sorted((store.root / "snapshots").iterdir())
    (snaps[0] / "big").write_bytes(b"x" * 10_000)
    grown = manage.disk_usage(store)["snapshots"][1]
    assert grown == usage["snapshots"][1] + 10_000
    os.link(snaps[0] / "big", snaps[1] / "big")
    assert manage.disk_usage(store)["snapshots"][1] == grown


def test_verify_finds_and_repairs_damage(store: Store, tmp_path: Path) -> None:
    a = _step(store, tmp_path, "a", "1")
    b = _step(store, tmp_path, "b", "2")
    c = _step(store, tmp_path, "c", "3")
    assert manage.verify(store).damaged == []
    rec_a = json.loads((store.root / "index" / f"{a.hex}.json").read_text())
    rec_b = json.loads((store.root / "index" / f"{b.hex}.json").read_text())
    # a's blob corrupted, b's snapshot changed, c's record cut short
    (store.root / "blobs/sha256" / Digest.parse(rec_a["digest"]).hex).write_bytes(b"junk")
    (store.root / "snapshots" / Digest.parse(rec_b["diff_id"]).hex / "b").write_text("changed")
    (store.root / "index" / f"{c.hex}.json").write_text('{"diff_')
    report = manage.verify(store)
    text = "\n".join(report.damaged)
    assert f"blob {rec_a['digest']}: content is" in text
    assert f"snapshot {rec_b['diff_id']}: its files" in text
    assert f"index record {a.hex}: its blob {rec_a['digest']} is damaged" in text
    assert f"index record {b.hex}: its snapshot {rec_b['diff_id']} is damaged" in text
    assert f"index record {c.hex}: unreadable" in text
    assert not report.ok
    fixed = manage.verify(store, repair=True)
    assert fixed.ok and len(fixed.repaired) == 5
    assert not (store.root / "index" / f"{a.hex}.json").exists()
    assert manage.verify(store).damaged == []
    assert manage.list_entries(store) == []


def test_verify_accepts_a_layer_made_with_source_date_epoch(store: Store) -> None:
    upper = store.tempdir("upper-")
    (upper / "f").write_text("x")
    out = store.tempfile("layer-")
    rec = write_layer(upper, out, compression="gzip", source_date_epoch=1000)
    store.put_blob_file(out, rec.digest)
    store.add_layer_blob(LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type))
    store.put_snapshot_dir(upper, rec.diff_id)
    assert manage.verify(store).damaged == []


def test_prune_lru_first_with_keep_storage_until_and_all(store: Store, tmp_path: Path) -> None:
    now = time.time()
    keys = [_step(store, tmp_path, f"f{i}", str(i) * 50_000) for i in range(4)]
    for i, k in enumerate(keys):  # f0 least recently used
        t = now - (4 - i) * 3600
        os.utime(store.root / "index" / f"{k.hex}.json", (t, t))
    report = manage.prune(store, until=3.5 * 3600, now=now)
    assert [e.key for e in report.records] == [keys[0]]
    assert report.removed_blobs == 1 and report.removed_snapshots == 1
    total = sum(s for _, s in manage.disk_usage(store).values())
    report = manage.prune(store, keep_storage=total - 1, now=now)
    assert [e.key for e in report.records] == [keys[1]]
    assert [e.key for e in manage.list_entries(store)] == keys[2:]
    report = manage.prune(store, all=True)
    assert len(report.records) == 2
    assert manage.disk_usage(store)["blobs"] == (0, 0)
    assert manage.disk_usage(store)["snapshots"] == (0, 0)


def test_prune_without_options_removes_only_unreferenced(store: Store, tmp_path: Path) -> None:
    key = _step(store, tmp_path, "a", "1")
    orphan, _ = store.put_blob_bytes(b"left by a killed build")
    report = manage.prune(store)
    assert report.records == [] and report.removed_blobs == 1
    assert not store.has_blob(orphan)
    assert [e.key for e in manage.list_entries(store)] == [key]
    assert manage.verify(store).damaged == []


_HOLDER = r"""
import sys, time
from pathlib import Path
from builder.cache.store import Store
from builder.digest import Digest
store = Store(Path(sys.argv[1]))
rec = store.get_record(Digest.parse(sys.argv[2]))
store.has_snapshot(Digest.parse(rec["diff_id"])); store.has_blob(Digest.parse(rec["digest"]))
(store.root / "tmp" / "busy").mkdir()
print("ready", flush=True)
time.sleep(60)
"""


def test_prune_and_tmp_cleanup_leave_a_live_holder_alone(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    key = _step(store, tmp_path, "a", "1")
    other = _step(store, tmp_path, "b", "2")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root), str(key)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        inspect = Store(root, track=False)
        assert (root / "tmp" / "busy").is_dir()
        held = [i for i in live_leases(root) if i.pid == proc.pid]
        assert held and f"key {key.hex}" in held[0].entries
        report = manage.prune(inspect, all=True)
        assert [e.key for e in report.records] == [other]
        assert report.kept_in_use == 1
        assert manage.verify(inspect).damaged == []
        assert (root / "tmp" / "busy").is_dir()
    finally:
        proc.kill()
        proc.wait()
    # The holder is dead (SIGKILL): its lease and its tmp/ entry go with the next opening
    # (once no live lease is older than the entry: end this process's own first).
    store.lease.close()
    time.sleep(0.1)  # past the clock margin of the rule
    later = Store(root, track=False)
    assert not (root / "tmp" / "busy").exists()
    assert all(i.pid != proc.pid for i in live_leases(root))
    assert len(manage.prune(later, all=True).records) == 1


def test_parse_duration_and_size() -> None:
    assert manage.parse_duration("1h30m") == 5400
    assert manage.parse_duration("7d") == 7 * 86400
    assert manage.parse_duration("90") == 90
    assert manage.parse_size("10GB") == 10 << 30
    assert manage.parse_size("1.5m") == 3 << 19
    with pytest.raises(UsageError):
        manage.parse_duration("soon")
    with pytest.raises(UsageError):
        manage.parse_size("lots")
