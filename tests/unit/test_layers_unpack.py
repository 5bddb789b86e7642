"""unpack_layer / unpack_blob: whiteout semantics in both modes, metadata, and hostile tars."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from builder.errors import LayerError
from builder.layers.tar import write_layer
from builder.layers.unpack import unpack_blob, unpack_layer

Entry = tuple[str, str, Any]  # (name, kind, payload) — see _tar


def _tar(*entries: Entry, **defaults: Any) -> bytes:
    """A tar built with tarfile: kind is file/dir/sym/link/fifo/chr; payload is content,
    link target or a dict of TarInfo attributes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            ti.mode = 0o755 if kind == "dir" else 0o644
            extra = payload if isinstance(payload, dict) else {}
            data = b""
            if kind == "file":
                data = payload if isinstance(payload, bytes) else extra.pop("data", b"")
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind in ("sym", "link"):
                ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                ti.linkname = payload
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
            for key, value in {**defaults, **extra}.items():
                setattr(ti, key, value)
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _unpack(blob: bytes, dest: Path, mode: str = "snapshot") -> tuple[str, ...]:
    return unpack_layer(io.BytesIO(blob), dest, mode=mode).warnings  # type: ignore[arg-type]


def _listing(root: Path) -> dict[str, str]:
    """path -> short description of what is there (type and content)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[rel] = "whiteout"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = "file:" + p.read_text()
            else:
                out[rel] = stat.filemode(st.st_mode)
    return out


def _is_opaque(path: Path) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name) == b"y":
                return True
        except OSError:
            pass
    return (path / ".wh..wh..opq").exists()


# ------------------------------------------------------------------ basics


def test_snapshot_mode_makes_overlay_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    blob = _tar(("etc/", "dir", {}), ("etc/.wh.old", "file", b""), ("var/", "dir", {}),
                ("var/.wh..wh..opq", "file", b""), ("var/new", "file", b"n"))
    dest = tmp_path / "snap"
    _unpack(blob, dest)
    listing = _listing(dest)
    assert listing.get("etc/old") == "whiteout" or listing.get("etc/.wh.old") == "file:"
    assert listing["var/new"] == "file:n" and _is_opaque(dest / "var")
    assert not _is_opaque(dest / "etc")


def test_snapshot_directory_replacing_its_own_whiteout_is_opaque(tmp_path: Path) -> None:
    blob = _tar((".wh.d", "file", b""), ("d/", "dir", {}), ("d/x", "file", b"x"))
    dest = tmp_path / "snap"
    _unpack(blob, dest)
    assert _listing(dest) == {"d": "dir", "d/x": "file:x"}
    assert _is_opaque(dest / "d")


def test_apply_mode_deletes_and_empties_but_keeps_this_layers_entries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _unpack(_tar(("a/", "dir", {}), ("a/old", "file", b"1"), ("b/", "dir", {}),
                 ("b/keep", "file", b"k"), ("c", "file", b"c"), ("d/", "dir", {}),
                 ("d/x", "file", b"x")), root, "apply")
    _unpack(_tar(("a/", "dir", {}), ("a/.wh..wh..opq", "file", b""), ("a/new", "file", b"2"),
                 ("b/.wh.missing", "file", b""), (".wh.c", "file", b""),
                 ("d/", "dir", {}), ("d/y", "file", b"y"), (".wh.d", "file", b"")),
            root, "apply")
    # d: the whiteout after d/y (same layer) removes only what lower layers had in d.
    assert _listing(root) == {"a": "dir", "a/new": "file:2", "b": "dir", "b/keep": "file:k",
                              "d": "dir", "d/y": "file:y"}


def test_apply_mode_replaces_file_with_dir_and_dir_with_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _unpack(_tar(("x", "file", b"f"), ("y/", "dir", {}), ("y/z", "file", b"z")), root, "apply")
    _unpack(_tar(("x/", "dir", {}), ("x/in", "file", b"i"), ("y", "sym", "x")), root, "apply")
    assert _listing(root) == {"x": "dir", "x/in": "file:i", "y": "-> x"}


def test_metadata_kept(tmp_path: Path) -> None:
    blob = _tar(
        ("d/", "dir", {"mode": 0o2750, "mtime": 1000}),
        ("d/suid", "file", {"data": b"#!", "mode": 0o4755, "mtime": 2000,
                            "pax_headers": {"SCHILY.xattr.user.k": "\x00v\udcff",
                                            "mtime": "2000.25"}}),
        ("d/lnk", "sym", "suid"),
        ("d/hard", "link", "d/suid"),
        ("d/fifo", "fifo", {"mode": 0o600}),
        uid=1234, gid=5678,
    )
    dest = tmp_path / "out"
    res = unpack_layer(io.BytesIO(blob), dest, mode="apply")
    st = os.lstat(dest / "d" / "suid")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_mtime_ns == 2_000_250_000_000
    assert os.getxattr(dest / "d" / "suid", "user.k") == b"\x00v\xff"
    assert os.readlink(dest / "d" / "lnk") == "suid"
    assert os.lstat(dest / "d" / "hard").st_ino == st.st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "d" / "fifo").st_mode)
    dst = os.lstat(dest / "d")
    # The directory's own mode and mtime, restored after its children were written.
    assert stat.S_IMODE(dst.st_mode) == 0o2750 and dst.st_mtime == 1000
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert res.diff_id.hex == hashlib.sha256(blob).hexdigest() and res.size == len(blob)


def test_existing_parent_times_are_put_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "gone").write_text("x")
    os.utime(root / "etc", (500, 500))
    _unpack(_tar(("etc/new", "file", b"n"), ("etc/.wh.gone", "file", b"")), root, "apply")
    assert _listing(root) == {"etc": "dir", "etc/new": "file:n"}
    assert os.lstat(root / "etc").st_mtime == 500


def test_devices_need_privilege_or_are_skipped_with_a_warning(tmp_path: Path) -> None:
    blob = _tar(("null", "chr", {"devmajor": 1, "devminor": 3, "mode": 0o666}))
    warnings = _unpack(blob, tmp_path / "d", "apply")
    st = (tmp_path / "d" / "null").lstat() if (tmp_path / "d" / "null").exists() else None
    if os.geteuid() == 0:
        assert st is not None and st.st_rdev == os.makedev(1, 3) and not warnings
    else:
        assert st is None and "skipping device 'null'" in warnings[0]


@pytest.mark.parametrize("kind", ["gzip", "zstd", "bzip2", "xz", "plain"])
def test_unpack_blob_detects_compression_and_computes_diff_id(tmp_path: Path, kind: str) -> None:
    raw = _tar(("a/", "dir", {}), ("a/f", "file", b"hello" * 1000))
    compress = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress,
                "bzip2": bz2.compress, "xz": lzma.compress, "plain": bytes}[kind]
    blob = tmp_path / "blob"
    blob.write_bytes(compress(raw))
    res = unpack_blob(blob, tmp_path / "out")
    assert res.diff_id.hex == hashlib.sha256(raw).hexdigest() and res.size == len(raw)
    assert (tmp_path / "out" / "a" / "f").read_bytes() == b"hello" * 1000


def test_snapshot_round_trip_gives_the_same_layer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    os.link(src / "d" / "f", src / "d" / "g")
    os.symlink("f", src / "d" / "s")
    os.setxattr(src / "d", "user.overlay.opaque", b"y")
    (src / ".wh.gone").touch()
    os.utime(src / "d", (7, 7))
    first = write_layer(src, tmp_path / "1.tgz")
    unpack_blob(tmp_path / "1.tgz", tmp_path / "snap")
    second = write_layer(tmp_path / "snap", tmp_path / "2.tgz")
    assert first == second


# ------------------------------------------------------------------ hostile tarballs


def _outside(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()} - {"dest"}


@pytest.mark.parametrize("mode", ["snapshot", "apply"])
@pytest.mark.parametrize(
    "entries,message",
    [
        ([("../evil", "file", b"x")], "climbs out"),
        ([("a/../../evil", "file", b"x")], "climbs out"),
        ([("..", "dir", {})], "climbs out"),
        ([("f", "file", b"x"), ("hard", "link", "../outside")], "climbs out"),
        ([("hard", "link", "/etc/shadow")], "hard link"),
        ([("hard", "link", "missing")], "hard link"),
        ([("d/", "dir", {}), ("hard", "link", "d")], "hard link"),
        ([("f", "file", b"x"), ("f/g", "file", b"y")], "not a directory"),
        ([("./", "sym", "/etc")], "root directory"),
        ([(".wh...", "file", b"")], "climbs out|whiteout"),
    ],
)
def test_hostile_entries_are_refused(tmp_path: Path, mode: str, entries: list[Entry],
                                     message: str) -> None:
    with pytest.raises(LayerError, match=message):
        _unpack(_tar(*entries), tmp_path / "dest", mode)
    assert _outside(tmp_path) == set()


@pytest.mark.parametrize("mode", ["snapshot", "apply"])
def test_symlinks_cannot_carry_writes_outside(tmp_path: Path, mode: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    blob = _tar(
        ("abs", "sym", os.fspath(victim)),  # absolute: resolved as if dest were /
        ("abs/evil", "file", b"1"),
        ("rel", "sym", "../../../../../../victim"),
        ("rel/evil2", "file", b"2"),
        ("chain", "sym", "rel"),
        ("chain/sub/evil3", "file", b"3"),
        ("/etc/passwd", "file", b"root::0:0"),  # leading / stripped, as docker does
        ("hard", "link", "abs/evil"),
    )
    dest = tmp_path / "dest"
    _unpack(blob, dest, mode)
    assert list(victim.iterdir()) == []
    listing = _listing(dest)
    inner = os.fspath(victim).lstrip("/")
    assert listing[f"{inner}/evil"] == "file:1" and listing["hard"] == "file:1"
    assert listing["victim/evil2"] == "file:2" and listing["victim/sub/evil3"] == "file:3"
    assert listing["etc/passwd"] == "file:root::0:0"
    assert _outside(tmp_path) == {"victim"}


def test_symlink_replaced_entry_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("safe")
    blob = _tar(("x", "sym", os.fspath(victim)), ("x", "file", b"overwritten?"))
    _unpack(blob, tmp_path / "dest", "apply")
    assert victim.read_text() == "safe"
    assert _listing(tmp_path / "dest") == {"x": "file:overwritten?"}


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    blob = _tar(("a", "sym", "b"), ("b", "sym", "a"), ("a/x", "file", b""))
    with pytest.raises(LayerError, match="symbolic links"):
        _unpack(blob, tmp_path / "dest")


def test_overlay_xattrs_in_a_layer_are_dropped(tmp_path: Path) -> None:
    blob = _tar(("d/", "dir", {"pax_headers": {"SCHILY.xattr.trusted.overlay.opaque": "y",
                                               "SCHILY.xattr.user.overlay.redirect": "/x"}}))
    warnings = _unpack(blob, tmp_path / "dest")
    assert not _is_opaque(tmp_path / "dest" / "d")
    assert any("overlay xattr" in w for w in warnings)


def test_garbage_is_a_layer_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="not a valid tar"):
        _unpack(b"\x01" * 2048, tmp_path / "dest")
    truncated = _tar(("f", "file", b"x" * 5000))[:1536]
    with pytest.raises(LayerError):
        _unpack(truncated, tmp_path / "dest2")


def test_fallback_spelling_without_whiteout_devices_or_xattrs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where mknod of a whiteout and overlay xattrs are refused (old kernels, odd file
    systems), the snapshot keeps the tar spelling and still writes the same layer."""
    blob = _tar(("d/", "dir", {}), ("d/.wh..wh..opq", "file", b""), ("d/x", "file", b"x"),
                (".wh.gone", "file", b""), (".wh.e", "file", b""), ("e/", "dir", {}))
    real_mknod, real_setxattr = os.mknod, os.setxattr

    def no_whiteouts(path: Any, mode: int = 0o600, device: int = 0, **kw: Any) -> None:
        if stat.S_ISCHR(mode) and device == 0:
            raise PermissionError(1, "Operation not permitted")
        real_mknod(path, mode, device, **kw)

    def no_overlay_xattrs(path: Any, name: str, *args: Any, **kw: Any) -> None:
        if ".overlay." in name:
            raise OSError(95, "Operation not supported")
        real_setxattr(path, name, *args, **kw)

    monkeypatch.setattr(os, "mknod", no_whiteouts)
    monkeypatch.setattr(os, "setxattr", no_overlay_xattrs)
    snap = tmp_path / "snap"
    warnings = _unpack(blob, snap)
    monkeypatch.undo()
    assert _listing(snap) == {"d": "dir", "d/.wh..wh..opq": "file:", "d/x": "file:x",
                              ".wh.gone": "file:", "e": "dir", "e/.wh..wh..opq": "file:"}
    assert len(warnings) == 2
    reference = tmp_path / "ref"
    _unpack(blob, reference)
    assert write_layer(snap, tmp_path / "a.tar") == write_layer(reference, tmp_path / "b.tar")
