"""builder.cache.remote without a registry: flag parsing, and an export to an OCI layout read
back into another store (records taken on demand, damaged blobs refused, cache mounts)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.cache.remote import (
    CONFIG_MEDIA_TYPE,
    CacheSpec,
    export_cache,
    mount_dir,
    open_imports,
    parse_cache_spec,
)
from builder.cache.store import LayerBlob, Store
from builder.digest import Digest, sha256_bytes
from builder.errors import CacheError, UsageError
from builder.layers.tar import write_layer
from builder.progress import Progress


def test_parse_cache_spec() -> None:
    assert parse_cache_spec({"type": "registry", "ref": "127.0.0.1:5000/a/b:c", "mode": "max"},
                            export=True) == CacheSpec("registry", "127.0.0.1:5000/a/b:c", mode="max")
    local = parse_cache_spec({"type": "local", "src": "/x"}, export=False)
    assert (local.location, local.tag, local.mounts) == ("/x", "latest", True)
    assert parse_cache_spec({"type": "local", "dest": "/x", "mounts": "true"}, export=True).mounts
    for opts, export, says in [
        ({"type": "registry"}, True, "ref= is required"),
        ({"type": "local", "src": "/x"}, True, "dest= is required"),
        ({"type": "local", "dest": "/x"}, False, "src= is required"),
        ({"type": "gha"}, False, "type must be registry or local"),
        ({"ref": "a/b", "mode": "all"}, True, "mode must be min or max"),
        ({"ref": "a b:c"}, False, "invalid --cache-from"),
    ]:
        with pytest.raises(UsageError, match=says):
            parse_cache_spec(opts, export=export)


@dataclass(frozen=True)
class _Step:
    stage: str
    key: str


@dataclass
class _Solver:
    steps: list[_Step]
    cache_mount_ids: set[str]
    graph: object = None


def _machine_one(tmp_path: Path) -> tuple[Store, Digest, Digest, LayerBlob]:
    """A store with one layer record and one empty record."""
    store = Store(tmp_path / "one")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hello").write_text("hello\n")
    out = store.tempfile("layer-")
    rec = write_layer(upper, out)
    store.put_blob_file(out, rec.digest)
    blob = LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type)
    key, empty = sha256_bytes(b"key-1"), sha256_bytes(b"key-2")
    store.put_record(key, {"diff_id": str(rec.diff_id), "digest": str(rec.digest), "size": rec.size,
                           "media_type": rec.media_type, "created": 1000.5, "step": "RUN x",
                           "stage": "s"})
    store.put_record(empty, {"empty": True, "created": 1001.0, "step": "RUN true", "stage": "s"})
    return store, key, empty, blob


def test_local_round_trip_takes_records_on_demand(tmp_path: Path) -> None:
    one, key, empty, blob = _machine_one(tmp_path)
    log = io.StringIO()
    progress = Progress("plain", stream=log)
    dest = tmp_path / "cache"
    solver = _Solver([_Step("s", str(key)), _Step("s", str(empty))], set())
    [(where, digest)] = export_cache(one, solver, [{"type": "local", "dest": str(dest), "mode": "max"}],
                                     progress=progress)
    assert where == f"{dest}:latest"
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == str(digest)
    manifest = json.loads((dest / "blobs/sha256" / digest.hex).read_bytes())
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert [d["digest"] for d in manifest["layers"]] == [str(blob.digest)]

    two = Store(tmp_path / "two")
    imports = open_imports(two, [{"type": "local", "src": str(dest)}], progress=progress)
    assert imports is not None and len(imports) == 2
    assert not two.has_blob(blob.digest)  # nothing fetched before a step asks
    assert imports.record(sha256_bytes(b"unknown")) is None
    got = imports.record(key)
    assert got is not None and got["created"] == 1000.5 and got["imported"] == f"{dest}:latest"
    assert two.has_blob(blob.digest)
    assert (two.snapshot_path(blob.diff_id) / "etc" / "hello").read_text() == "hello\n"
    assert two.get_record(key) == {**got}
    assert imports.record(empty) == {"empty": True, "created": 1001.0, "step": "RUN true",
                                     "stage": "s", "imported": f"{dest}:latest"}
    assert imports.fetched == [blob.digest]
    from builder.cache.manage import verify

    report = verify(two)  # the store an import leaves is as consistent as one a build leaves
    assert report.damaged == [] and report.unreferenced == []


def test_damaged_blob_is_refused(tmp_path: Path) -> None:
    one, key, _, blob = _machine_one(tmp_path)
    log = io.StringIO()
    progress = Progress("plain", stream=log)
    dest = tmp_path / "cache"
    export_cache(one, _Solver([_Step("s", str(key))], set()),
                 [{"type": "local", "dest": str(dest), "mode": "max"}], progress=progress)
    path = dest / "blobs/sha256" / blob.digest.hex
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    two = Store(tmp_path / "two")
    imports = open_imports(two, [{"type": "local", "src": str(dest)}], progress=progress)
    assert imports is not None and imports.record(key) is None
    assert two.get_record(key) is None and not two.has_blob(blob.digest)
    assert "not reused" in log.getvalue()


def test_unreadable_source_is_a_warning(tmp_path: Path) -> None:
    log = io.StringIO()
    imports = open_imports(Store(tmp_path / "s"), [{"type": "local", "src": str(tmp_path / "no")}],
                           progress=Progress("plain", stream=log))
    assert imports is not None and len(imports) == 0
    assert f"WARNING: cannot import cache from {tmp_path / 'no'}:latest" in log.getvalue()


def test_cache_mounts_restored_only_where_empty(tmp_path: Path) -> None:
    one = Store(tmp_path / "one")
    folder = mount_dir(one.root, "pkgs")
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "pkg.deb").write_bytes(b"deb")
    progress = Progress("quiet")
    dest = tmp_path / "cache"
    export_cache(one, _Solver([], {"pkgs", "never-made"}),
                 [{"type": "local", "dest": str(dest), "mode": "max", "mounts": "true"}], progress=progress)
    two = Store(tmp_path / "two")
    open_imports(two, [{"type": "local", "src": str(dest)}], progress=progress)
    assert (mount_dir(two.root, "pkgs") / "sub" / "pkg.deb").read_bytes() == b"deb"
    assert not mount_dir(two.root, "never-made").exists()

    three = Store(tmp_path / "three")
    mine = mount_dir(three.root, "pkgs")
    mine.mkdir(parents=True)
    (mine / "own").write_text("mine")
    open_imports(three, [{"type": "local", "src": str(dest)}], progress=progress)
    assert sorted(p.name for p in mine.iterdir()) == ["own"]
    # mounts=false on import leaves an empty folder empty
    four = Store(tmp_path / "four")
    open_imports(four, [{"type": "local", "src": str(dest), "mounts": "false"}], progress=progress)
    assert not mount_dir(four.root, "pkgs").exists()


def test_export_failure_fails_unless_ignore_error(tmp_path: Path) -> None:
    one, key, _, _ = _machine_one(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    solver = _Solver([_Step("s", str(key))], set())
    with pytest.raises(CacheError, match=f"cannot export cache to {blocked}"):
        export_cache(one, solver, [{"type": "local", "dest": str(blocked), "mode": "max"}],
                     progress=Progress("quiet"))
    log = io.StringIO()
    assert export_cache(one, solver, [{"type": "local", "dest": str(blocked), "mode": "max",
                                       "ignore-error": "true"}],
                        progress=Progress("plain", stream=log)) == []
    assert f"WARNING: cache not exported to {blocked}:latest" in log.getvalue()
