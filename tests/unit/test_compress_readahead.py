"""open_decompressed: gzip read with zlib's own checks, decompressed a chunk ahead in a thread.
What a reader sees must be GzipFile's: the bytes of every member, and its errors."""
from __future__ import annotations

import gzip
import io
import threading
import zlib

import pytest
import zstandard

from builder.layers.compress import open_decompressed

MIB = 1 << 20


def _read_all(blob: bytes, piece: int = 65536) -> bytes:
    out = bytearray()
    with open_decompressed(io.BytesIO(blob)) as f:
        while chunk := f.read(piece):
            out += chunk
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, 3 * MIB, 3 * MIB + 7])
def test_gzip_sizes_around_the_chunk(size: int) -> None:
    # zeros deflate ~1000:1, so one read of compressed bytes gives many chunks out
    data = bytes(size // 2) + bytes(range(256)) * ((size - size // 2) // 256)
    data += b"x" * (size - len(data))
    assert _read_all(gzip.compress(data, mtime=0)) == data
    assert _read_all(zlib.compress(data, wbits=31)) == data


def test_gzip_members_and_zero_padding_between_them() -> None:
    blob = gzip.compress(b"one ", mtime=0) + bytes(100) + gzip.compress(b"two", mtime=0) + bytes(7)
    assert _read_all(blob) == b"one two"
    assert gzip.decompress(blob) == b"one two"  # what GzipFile reads, too


def test_a_cut_gzip_stream_is_eoferror() -> None:
    blob = gzip.compress(b"some layer bytes" * 1000, mtime=0)
    with pytest.raises(EOFError, match="ended before the end-of-stream marker"):
        _read_all(blob[:-12])


@pytest.mark.parametrize("damage", ["crc", "body", "trailing"])
def test_damaged_gzip_is_an_oserror(damage: str) -> None:
    blob = bytearray(gzip.compress(b"some layer bytes " * 5000, mtime=0))
    if damage == "crc":
        blob[-8] ^= 0xFF
    elif damage == "body":
        blob[len(blob) // 2] ^= 0xFF
    else:
        blob += b"garbage after the member"
    with pytest.raises(OSError):  # gzip.BadGzipFile is one, as GzipFile raises
        _read_all(bytes(blob))


def test_zstd_frames_are_read_across() -> None:
    cctx = zstandard.ZstdCompressor()
    blob = cctx.compress(b"a" * (2 * MIB)) + cctx.compress(b"b" * 10)
    assert _read_all(blob) == b"a" * (2 * MIB) + b"b" * 10


def test_closing_early_stops_the_thread() -> None:
    blob = gzip.compress(bytes(64 * MIB), compresslevel=1, mtime=0)
    before = threading.active_count()
    f = open_decompressed(io.BytesIO(blob))
    assert f.read(10) == bytes(10)
    assert threading.active_count() == before + 1
    f.close()  # the thread has more chunks to give: it must stop, not wait for a reader
    assert threading.active_count() == before



def test_an_uncompressed_stream_is_passed_through_whole(tmp_path) -> None:
    """Read through the caller's own file object (readinto, no extra copy), after the magic
    bytes already taken, and without closing it."""
    data = bytes(range(256)) * (5 * 4096) + b"tail"
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    with open(path, "rb") as raw:
        with open_decompressed(raw) as f:
            assert f.read(3) == data[:3]
            assert f.read(MIB) == data[3:MIB + 3]
            assert f.read() == data[MIB + 3:]
        assert not raw.closed
