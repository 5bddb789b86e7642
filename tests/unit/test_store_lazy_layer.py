"""A step's plain layer kept as its snapshot only: Store.layer_file makes its tar (checked),
and Store.snapshot_untouched tells an export whether it must hash that tar again."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from builder.cache.store import Store
from builder.digest import Digest
from builder.errors import CacheError
from builder.layers.tar import hash_layer


def _adopt(store: Store) -> tuple[Path, str]:
    upper = store.tempdir("upper-")
    (upper / "d" / "e").mkdir(parents=True)
    (upper / "d" / "e" / "f").write_text("one\n")
    (upper / "g").write_text("two\n")
    rec = hash_layer(upper)
    time.sleep(0.02)  # past the coarse ctime tick of the writes above
    return store.put_snapshot_dir(upper, rec.diff_id), str(rec.diff_id)


def test_the_tar_is_made_once_from_the_snapshot_and_checked(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    snap, diff_id = _adopt(store)
    digest = hash_layer(snap).digest
    assert str(digest) == diff_id and not store.has_blob(digest) and store.has_layer(digest)
    path = store.layer_file(digest)
    assert path.is_file() and store.has_blob(digest)
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == diff_id
    assert [b.digest for b in store.layer_blobs(digest).values()] == [digest]
    # a snapshot whose files changed never gives a wrong tar
    path.unlink()
    (snap / "g").write_text("changed\n")
    with pytest.raises(CacheError, match="no longer gives its tar"):
        store.layer_file(digest)
    assert not store.has_blob(digest)


def test_a_snapshot_is_untouched_until_something_below_it_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    snap, diff_id = _adopt(store)
    digest = hash_layer(snap).digest
    assert store.snapshot_untouched(digest)
    time.sleep(0.02)
    os.chmod(snap / "d" / "e" / "f", 0o600)  # deep down, metadata only
    assert not store.snapshot_untouched(digest)

    store2 = Store(tmp_path / "store2")
    snap2, _ = _adopt(store2)
    time.sleep(0.02)
    os.link(snap2 / "g", tmp_path / "linked")  # a later COPY linking it: doubt, so hash again
    assert not store2.snapshot_untouched(hash_layer(snap2).digest)
    assert not store2.snapshot_untouched(Digest.sha256("0" * 64))  # no such snapshot


def test_a_step_folder_is_synced_while_hashed_and_a_failed_sync_fails_the_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder import layerstore
    from builder.executor import libc

    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "f").write_text("data\n")
    synced: list[str] = []
    monkeypatch.setattr(libc, "syncfs", lambda path: synced.append(str(path)))
    rec = layerstore._hash_while_syncing(upper)
    assert synced == [str(upper)] and rec == hash_layer(upper)

    def refuse(path: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(libc, "syncfs", refuse)
    with pytest.raises(OSError, match="Input/output error"):
        layerstore._hash_while_syncing(upper)



@pytest.mark.parametrize("kind", ["epoch", "owner"])
def test_a_step_folder_written_as_a_tar_is_synced_before_it_is_adopted(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SOURCE_DATE_EPOCH or mapped owners the step's tar is written (the snapshot alone
    cannot give it again), and the snapshot beside it is made durable too before it is
    adopted; a failed sync adopts nothing."""
    from builder import layerstore
    from builder.executor import libc

    store = Store(tmp_path / "store")
    upper = store.tempdir("upper-")
    (upper / "d").mkdir()
    (upper / "d" / "f").write_text("data\n")
    options = ({"source_date_epoch": 1_700_000_000, "owner": None} if kind == "epoch"
               else {"source_date_epoch": None, "owner": lambda uid, gid: (uid + 1000, gid + 1000)})
    synced: list[str] = []

    def refuse(path: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(libc, "syncfs", refuse)
    with pytest.raises(OSError, match="Input/output error"):
        layerstore.commit_layer(store, upper, **options)
    assert not any((store.root / "snapshots").iterdir())

    def record(path: object) -> None:
        assert not any((store.root / "snapshots").iterdir()), "synced after adoption"
        synced.append(str(path))

    monkeypatch.setattr(libc, "syncfs", record)
    fields = layerstore.commit_layer(store, upper, **options)
    assert synced == [str(upper)]
    assert store.snapshot_path(Digest.parse(fields["diff_id"])).joinpath("d", "f").read_text() == "data\n"
