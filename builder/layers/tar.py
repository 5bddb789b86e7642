"""Deterministic layer tars: a snapshot's changes -> a compressed blob and its digests.

Headers are encoded here rather than by ``tarfile`` so the bytes (and so the digests the
cache relies on) never move with the Python version. The rules, after umoci:

* POSIX ustar headers, a PAX extended header only when a value does not fit (a long or
  non-ASCII name or link target, large ids/sizes/times) or for xattrs
  (``SCHILY.xattr.NAME``); PAX records sorted by key;
* no user or group names, numeric ids, mode bits 07777 only, mtime in whole seconds,
  clamped to SOURCE_DATE_EPOCH when given; no atime/ctime;
* a whiteout is an empty regular file ``DIR/.wh.NAME``, an opaque directory is its entry
  followed by ``DIR/.wh..wh..opq``; both have mode 0, ids 0 and mtime 0 (or the epoch);
* hard links (same inode in the snapshot) after the first are LNKTYPE entries;
* the archive ends with two zero blocks and no padding to a record size (as Go writes).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from builder.digest import Digest
from builder.errors import LayerError
from builder.layers.compress import CompressingWriter, media_type_for
from builder.layers.diff import OPAQUE_MARKER, WHITEOUT_PREFIX, changes, walk_tree
from builder.layers.types import Change, Compression, LayerRecord

__all__ = ["hash_layer", "write_layer", "write_tree_tar", "TarWriter", "HashingWriter"]

BLOCK = 512
_CHUNK = 1 << 20
_FLUSH_AT = 1 << 20
_SMALL = 64 << 10  # files up to this size are copied through the buffer


class HashingWriter:
    """Passes writes to ``out`` while hashing them (sha256) and counting bytes."""

    def __init__(self, out: BinaryIO | CompressingWriter | None) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._out is not None:
            self._out.write(data)
        return len(data)

    @property
    def digest(self) -> Digest:
        return Digest.sha256(self._hash.hexdigest())


def _octal(value: int, width: int) -> bytes | None:
    """``width - 1`` octal digits and a NUL, or None when the value does not fit."""
    if value < 0:
        return None
    text = b"%0*o" % (width - 1, value)
    return text + b"\0" if len(text) <= width - 1 else None


def _base256(value: int, width: int) -> bytes:
    # GNU's binary numbers: only for device numbers, which PAX has no key for.
    if value < 0 or value >= 1 << (8 * (width - 1)):
        raise LayerError(f"device number {value} cannot be written in a tar header")
    return b"\x80" + value.to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    # The length counts its own digits: 98 bytes of body make "101 ...", not "100 ...".
    digits = len(str(len(body)))
    size = len(body) + digits
    if len(str(size)) != digits:
        size = len(body) + len(str(size))
    return b"%d" % size + body


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fitting the ustar fields, or None (then PAX ``path`` is used)."""
    if not name.isascii():
        return None
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    # The shortest name field that fits: split at the first '/' leaving <= 100 bytes.
    for i in range(len(name) - 101, min(len(name), 156)):
        if i >= 0 and name[i : i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def _field(value: bytes, width: int) -> bytes:
    return value[:width].ljust(width, b"\0")


class TarWriter:
    """Writes tar entries to a stream (buffered, so hashing happens in large pieces)."""

    def __init__(self, out: HashingWriter | BinaryIO) -> None:
        self._out = out
        self._buf = bytearray()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._out.write(bytes(self._buf))
            self._buf.clear()

    def header(self, *, name: bytes, typeflag: bytes, mode: int = 0, uid: int = 0,
               gid: int = 0, size: int = 0, mtime: int = 0, linkname: bytes = b"",
               devmajor: int = 0, devminor: int = 0,
               xattrs: Iterable[tuple[str, bytes]] = ()) -> None:
        pax: dict[bytes, bytes] = {}
        split = _split_ustar(name)
        if split is None:
            pax[b"path"] = name
            split = (b"", name[:100])
        if not linkname.isascii() or len(linkname) > 100:
            pax[b"linkpath"] = linkname
        fields: dict[str, bytes] = {}
        for key, value, width in (("uid", uid, 8), ("gid", gid, 8), ("size", size, 12),
                                  ("mtime", mtime, 12)):
            encoded = _octal(value, width)
            if encoded is None:
                pax[key.encode()] = b"%d" % value
                encoded = _octal(0, width)
            assert encoded is not None
            fields[key] = encoded
        for xname, xvalue in xattrs:
            pax[b"SCHILY.xattr." + xname.encode("utf-8", "surrogateescape")] = xvalue
        if pax:
            if any(not _is_utf8(v) for k, v in pax.items() if k in (b"path", b"linkpath")):
                pax[b"hdrcharset"] = b"BINARY"
            records = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
            self._raw_header(b"././@PaxHeader", b"", b"x", 0o644, _octal(0, 8), _octal(0, 8),
                             _octal(len(records), 12), _octal(0, 12), b"", 0, 0)
            self._emit(records)
            self._pad(len(records))
        self._raw_header(split[1], split[0], typeflag, mode, fields["uid"], fields["gid"],
                         fields["size"], fields["mtime"], linkname[:100], devmajor, devminor)

    def _raw_header(self, name: bytes, prefix: bytes, typeflag: bytes, mode: int,
                    uid: bytes | None, gid: bytes | None, size: bytes | None,
                    mtime: bytes | None, linkname: bytes, devmajor: int, devminor: int) -> None:
        dev = [(_octal(v, 8) or _base256(v, 8)) for v in (devmajor, devminor)]
        block = b"".join([
            _field(name, 100), _octal(mode & 0o7777, 8) or b"", uid or b"", gid or b"",
            size or b"", mtime or b"", b" " * 8, typeflag, _field(linkname, 100),
            b"ustar\x0000", b"\0" * 32, b"\0" * 32, dev[0], dev[1], _field(prefix, 155),
            b"\0" * 12,
        ])
        assert len(block) == BLOCK, len(block)
        checksum = b"%06o\0 " % sum(block)
        self._emit(block[:148] + checksum + block[156:])

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._emit(b"\0" * (BLOCK - size % BLOCK))

    def content(self, source: Path, size: int, rel: str) -> None:
        """Copies exactly ``size`` bytes of ``source`` into the archive. Small files join
        the buffer (one hash and compressor call for many of them); big ones stream."""
        # os.open/os.read: no buffered file object for each of thousands of small files
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if size <= _SMALL:
                data = os.read(fd, size) if size else b""
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        raise LayerError(f"{rel!r} shrank while it was being written to a layer")
                    data += more
                self._emit(data)
            else:
                self.flush()
                left = size
                while left:
                    chunk = os.read(fd, min(_CHUNK, left))
                    if not chunk:
                        raise LayerError(f"{rel!r} shrank while it was being written to a layer")
                    self._out.write(chunk)
                    left -= len(chunk)
        finally:
            os.close(fd)
        self._pad(size)

    def close(self) -> None:
        self._emit(b"\0" * (2 * BLOCK))
        self.flush()

    def add(self, change: Change, *, epoch: int | None = None) -> None:
        """Writes one change (whiteout, opaque marker or entry with its content)."""
        marker_time = epoch if epoch is not None else 0
        if change.kind == "whiteout":
            parent, _, base = change.path.rpartition("/")
            name = _join(parent, WHITEOUT_PREFIX + base)
            self.header(name=_b(name), typeflag=b"0", mtime=marker_time)
            return
        if change.kind == "opaque":
            self.header(name=_b(_join(change.path, OPAQUE_MARKER)), typeflag=b"0",
                        mtime=marker_time)
            return
        mode = change.mode
        mtime = change.mtime_ns // 1_000_000_000
        if epoch is not None:
            mtime = min(mtime, epoch)
        common = dict(mode=mode, uid=change.uid, gid=change.gid, mtime=mtime)
        name = _b(change.path)
        if change.hardlink_to is not None:
            self.header(name=name, typeflag=b"1", linkname=_b(change.hardlink_to), **common)
            return
        xattrs = change.xattrs
        if stat.S_ISREG(mode):
            self.header(name=name, typeflag=b"0", size=change.size, xattrs=xattrs, **common)
            assert change.source is not None
            self.content(change.source, change.size, change.path)
        elif stat.S_ISDIR(mode):
            self.header(name=name + b"/", typeflag=b"5", xattrs=xattrs, **common)
        elif stat.S_ISLNK(mode):
            self.header(name=name, typeflag=b"2", linkname=_b(change.link_target or ""),
                        xattrs=xattrs, **common)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.header(name=name, typeflag=b"3" if stat.S_ISCHR(mode) else b"4",
                        devmajor=change.devmajor, devminor=change.devminor, xattrs=xattrs,
                        **common)
        elif stat.S_ISFIFO(mode):
            self.header(name=name, typeflag=b"6", xattrs=xattrs, **common)
        else:
            raise LayerError(f"{change.path!r} has a file type a tar cannot carry")


def _b(path: str) -> bytes:
    return os.fsencode(path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def write_layer(snapshot: Path, out: Path, *, compression: Compression = "gzip",
                level: int | None = None, source_date_epoch: int | None = None,
                owner: Callable[[int, int], tuple[int, int]] | None = None,
                diff_id: Digest | None = None) -> LayerRecord:
    """Writes the layer of ``snapshot`` (overlay upper-dir format) to ``out`` in one pass,
    hashing the uncompressed tar (diff_id) and the file (digest) as it streams. ``out``
    appears complete or not at all. ``owner`` maps the snapshot's (host) uid/gid to the
    ones written (a rootless step's files belong to the building user on the host).
    ``diff_id``: what the caller knows the tar to be (a snapshot unchanged since it was
    hashed); a compressed tar is then not hashed again (a second sha256 of every byte
    costs as much CPU as half of zstd's work)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            blob = HashingWriter(f)  # type: ignore[arg-type]
            comp = CompressingWriter(blob, compression, level)  # type: ignore[arg-type]
            # a plain tar is its own blob: one hash serves as both digest and diff_id
            raw: Any = blob if compression == "uncompressed" else (
                comp if diff_id is not None else HashingWriter(comp))
            _write_changes(snapshot, raw, source_date_epoch, owner)
            comp.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return LayerRecord(diff_id=raw.digest if raw is not comp else diff_id,  # type: ignore[arg-type]
                       digest=blob.digest, size=blob.size, media_type=comp.media_type)


def hash_layer(snapshot: Path) -> LayerRecord:
    """The record of ``snapshot``'s plain layer tar, hashed as it is made and never written:
    the store keeps such a layer as its snapshot and makes the tar when one is asked for
    (``Store.layer_file``), which gives these very bytes again (no epoch, no id mapping)."""
    raw = HashingWriter(None)
    _write_changes(snapshot, raw, None, None)
    return LayerRecord(diff_id=raw.digest, digest=raw.digest, size=raw.size,
                       media_type=media_type_for("uncompressed"))


def _write_changes(snapshot: Path, raw: Any, epoch: int | None,
                   owner: Callable[[int, int], tuple[int, int]] | None) -> None:
    tw = TarWriter(raw)
    for change in changes(Path(snapshot)):
        if owner is not None and change.kind == "entry":
            uid, gid = owner(change.uid, change.gid)
            change = dataclasses.replace(change, uid=uid, gid=gid)
        tw.add(change, epoch=epoch)
    tw.close()


def write_tree_tar(root: Path, out_fileobj: BinaryIO, *,
                   source_date_epoch: int | None = None) -> tuple[Digest, int]:
    """Writes a plain deterministic tar of every entry below ``root`` (a flattened root
    file system; nothing is read as a whiteout) to ``out_fileobj``. Returns the tar's
    digest and size."""
    raw = HashingWriter(out_fileobj)
    tw = TarWriter(raw)
    for change in walk_tree(Path(root)):
        tw.add(change, epoch=source_date_epoch)
    tw.close()
    return raw.digest, raw.size
