"""write_layer / write_tree_tar: exact headers, order, whiteouts, determinism, digests."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from builder.digest import sha256_file
from builder.errors import LayerError
from builder.layers.tar import write_layer, write_tree_tar

T = 1_700_000_000


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        (path.parent / (".wh." + path.name)).touch()


def _snapshot(root: Path) -> Path:
    """A small upper dir: files, dirs, a hard link, a symlink, a fifo, whiteouts, opaque."""
    up = root / "up"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (up / "bin").mkdir()
    (up / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(1000))
    os.chmod(up / "bin" / "tool", 0o4755)
    os.link(up / "bin" / "tool", up / "bin" / "tool2")
    os.symlink("tool", up / "bin" / "alias")
    os.mkfifo(up / "bin" / "pipe", 0o640)
    (up / "var").mkdir()
    os.setxattr(up / "var", "user.overlay.opaque", b"y")
    (up / "var" / "new").write_text("n")
    _whiteout(up / "etc" / "old.conf")
    os.setxattr(up / "etc" / "hosts", "user.cap", b"\x01\x00\xff")
    for p in sorted(up.rglob("*"), reverse=True):
        os.utime(p, ns=(T * 10**9, T * 10**9 + 999_999_999), follow_symlinks=False)
    return up


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
        return tf.getmembers()


def test_headers_order_and_whiteouts(tmp_path: Path) -> None:
    up = _snapshot(tmp_path)
    rec = write_layer(up, tmp_path / "l.tar", compression="uncompressed")
    blob = (tmp_path / "l.tar").read_bytes()
    got = [(m.name, m.type) for m in _members(blob)]
    assert got == [
        ("bin", tarfile.DIRTYPE),
        ("bin/alias", tarfile.SYMTYPE),
        ("bin/pipe", tarfile.FIFOTYPE),
        ("bin/tool", tarfile.REGTYPE),
        ("bin/tool2", tarfile.LNKTYPE),
        ("etc", tarfile.DIRTYPE),
        ("etc/.wh.old.conf", tarfile.REGTYPE),
        ("etc/hosts", tarfile.REGTYPE),
        ("var", tarfile.DIRTYPE),
        ("var/.wh..wh..opq", tarfile.REGTYPE),
        ("var/new", tarfile.REGTYPE),
    ]
    m = {x.name: x for x in _members(blob)}
    for x in m.values():
        assert x.uname == "" and x.gname == ""
        assert x.mtime == (0 if ".wh." in x.name else T)
    assert m["bin/tool"].mode == 0o4755 and m["bin/tool"].size == 1004
    assert m["bin/tool2"].linkname == "bin/tool" and m["bin/tool2"].size == 0
    assert m["bin/alias"].linkname == "tool"
    assert m["bin/pipe"].mode == 0o640
    assert m["etc/.wh.old.conf"].mode == 0 and m["etc/.wh.old.conf"].size == 0
    assert m["etc/hosts"].pax_headers == {"SCHILY.xattr.user.cap": "\x01\x00\udcff"}
    assert m["bin/tool"].pax_headers == {}  # PAX only where needed
    # The directory entry is written with its trailing slash.
    assert b"bin/\0" in blob[:512]
    assert rec.diff_id == rec.digest == sha256_file(tmp_path / "l.tar")[0]
    assert rec.size == len(blob) and rec.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert blob.endswith(b"\0" * 1024) and len(blob) % 512 == 0


def test_gzip_and_zstd_layers_and_their_digests(tmp_path: Path) -> None:
    up = _snapshot(tmp_path)
    plain = write_layer(up, tmp_path / "l.tar", compression="uncompressed")
    gz = write_layer(up, tmp_path / "l.tgz")
    zst = write_layer(up, tmp_path / "l.tzst", compression="zstd", level=5)
    assert gz.media_type.endswith("tar+gzip") and zst.media_type.endswith("tar+zstd")
    raw = (tmp_path / "l.tar").read_bytes()
    assert gzip.decompress((tmp_path / "l.tgz").read_bytes()) == raw
    zdata = (tmp_path / "l.tzst").read_bytes()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zdata) == raw
    assert gz.diff_id == zst.diff_id == plain.diff_id
    assert gz.digest == sha256_file(tmp_path / "l.tgz")[0] != gz.diff_id
    assert gz.size == (tmp_path / "l.tgz").stat().st_size
    assert (tmp_path / "l.tgz").read_bytes()[4:8] == b"\0\0\0\0"  # no gzip timestamp


def test_same_tree_same_bytes_and_metadata_matters(tmp_path: Path) -> None:
    up = _snapshot(tmp_path)
    a = write_layer(up, tmp_path / "a.tgz")
    b = write_layer(up, tmp_path / "b.tgz")
    assert a == b
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    # Sub-second mtime changes do not matter (whole seconds); a chmod does.
    os.utime(up / "etc" / "hosts", ns=(0, T * 10**9 + 5))
    assert write_layer(up, tmp_path / "c.tgz") == a
    os.chmod(up / "etc" / "hosts", 0o600)
    assert write_layer(up, tmp_path / "d.tgz").diff_id != a.diff_id


def test_source_date_epoch_clamps_times(tmp_path: Path) -> None:
    up = _snapshot(tmp_path)
    os.utime(up / "var" / "new", (100, 100))
    write_layer(up, tmp_path / "l.tar", compression="uncompressed", source_date_epoch=1000)
    m = {x.name: x.mtime for x in _members((tmp_path / "l.tar").read_bytes())}
    assert m["var/new"] == 100 and m["etc/hosts"] == 1000
    assert m["etc/.wh.old.conf"] == 1000 and m["var/.wh..wh..opq"] == 1000


def test_long_and_non_ascii_names_large_ids(tmp_path: Path) -> None:
    up = tmp_path / "up"
    deep = up / ("d" * 120) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / ("f" * 20)).write_text("x")
    (up / "n\u00e9").write_text("x")
    raw_name = os.fsdecode(b"bad\xffname")
    (up / raw_name).write_text("x")
    os.symlink("t" * 150, up / "longlink")
    if os.geteuid() == 0:
        os.chown(up / "n\u00e9", 3_000_000, 3_000_001)
    write_layer(up, tmp_path / "l.tar", compression="uncompressed")
    members = {m.name: m for m in _members((tmp_path / "l.tar").read_bytes())}
    assert members[f"{'d' * 120}/{'e' * 90}"].pax_headers == {}  # fits ustar prefix+name
    assert "path" in members[f"{'d' * 120}/{'e' * 90}/{'f' * 20}"].pax_headers
    assert members["longlink"].linkname == "t" * 150
    assert members[raw_name].pax_headers.get("hdrcharset") == "BINARY"
    if os.geteuid() == 0:
        assert (members["n\u00e9"].uid, members["n\u00e9"].gid) == (3_000_000, 3_000_001)


def test_devices_when_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a device needs root")
    up = tmp_path / "up"
    up.mkdir()
    os.mknod(up / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(up / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 300))
    write_layer(up, tmp_path / "l.tar", compression="uncompressed")
    m = {x.name: x for x in _members((tmp_path / "l.tar").read_bytes())}
    assert m["null"].ischr() and (m["null"].devmajor, m["null"].devminor) == (1, 3)
    assert m["blk"].isblk() and m["blk"].devminor == 300


def test_written_aside_and_nothing_left_on_failure(tmp_path: Path) -> None:
    up = _snapshot(tmp_path)
    out = tmp_path / "out" / "l.tgz"
    out.parent.mkdir()
    write_layer(up, out)
    assert os.listdir(out.parent) == ["l.tgz"]
    os.setxattr(up / "etc", "user.overlay.redirect", b"x")
    before = out.read_bytes()
    with pytest.raises(LayerError):
        write_layer(up, out)
    assert os.listdir(out.parent) == ["l.tgz"] and out.read_bytes() == before


def test_tree_tar_is_plain_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / ".wh.literal").write_text("kept as is")
    (root / "b").write_text("b")
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        digest, size = write_tree_tar(root, buf, source_date_epoch=5)
        outs.append(buf.getvalue())
        assert str(digest) == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        assert size == len(buf.getvalue())
    assert outs[0] == outs[1]
    members = _members(outs[0])
    assert [m.name for m in members] == ["a", "a/.wh.literal", "b"]
    assert {m.mtime for m in members} == {5}


def test_pax_record_lengths_at_digit_boundaries(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    for n in range(70, 110):  # records of 9x..10x bytes cross from 2 to 3 length digits
        f = up / f"f{n:03d}"
        f.write_text("x")
        os.setxattr(f, "user.k", b"v" * n)
    write_layer(up, tmp_path / "l.tar", compression="uncompressed")
    blob = (tmp_path / "l.tar").read_bytes()
    for m in _members(blob):
        n = int(m.name[1:])
        assert m.pax_headers == {"SCHILY.xattr.user.k": "v" * n}
    assert b"101 SCHILY.xattr.user.k=" + b"v" * 76 + b"\n" in blob
