"""Compression: magic detection, streaming decompression, deterministic parallel gzip/zstd."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import zlib

import pytest
import zstandard

from builder.errors import LayerError
from builder.layers.compress import (
    CompressingWriter,
    compression_for_media_type,
    detect_compression,
    media_type_for,
    open_decompressed,
)
from builder.layers.gzip_parallel import BLOCK_SIZE


def _payload(n: int = 700_000) -> bytes:
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(300)]
    text = b" ".join(rng.choice(words) for _ in range(n // 6))[: n // 2]
    return text + rng.randbytes(n - len(text))


def _compress(data: bytes, compression: str, *, threads: int | None = None,
              level: int | None = None, piece: int = 9973) -> bytes:
    out = io.BytesIO()
    with CompressingWriter(out, compression, level, threads=threads) as w:  # type: ignore[arg-type]
        for i in range(0, len(data), piece):
            w.write(data[i : i + piece])
    return out.getvalue()


@pytest.mark.parametrize(
    "blob,kind",
    [
        (gzip.compress(b"x"), "gzip"),
        (zstandard.ZstdCompressor().compress(b"x"), "zstd"),
        (bz2.compress(b"x"), "bzip2"),
        (lzma.compress(b"x"), "xz"),
        (b"plain tar bytes", "uncompressed"),
        (b"", "uncompressed"),
    ],
)
def test_detects_compression_by_magic_and_decompresses(blob: bytes, kind: str) -> None:
    assert detect_compression(blob[:6]) == kind
    expected = b"" if not blob else (b"plain tar bytes" if kind == "uncompressed" else b"x")
    assert open_decompressed(io.BytesIO(blob)).read() == expected


def test_decompresses_a_stream_read_in_tiny_pieces() -> None:
    data = _payload(300_000)

    class Trickle(io.RawIOBase):
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            piece, self.blob = self.blob[:3], self.blob[3:]
            return piece

    for kind in ("gzip", "zstd"):
        blob = _compress(data, kind)
        assert open_decompressed(Trickle(blob)).read() == data  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gzip", "zstd", "uncompressed"])
def test_round_trip_and_same_bytes_whatever_the_thread_count(kind: str) -> None:
    data = _payload()
    outs = {_compress(data, kind, threads=t, piece=p) for t in (1, 2, 5) for p in (1000, 65536)}
    assert len(outs) == 1
    (blob,) = outs
    assert open_decompressed(io.BytesIO(blob)).read() == data
    if kind == "uncompressed":
        assert blob == data


def test_gzip_is_one_valid_member_with_a_fixed_header() -> None:
    data = _payload(5 * BLOCK_SIZE + 123)
    blob = _compress(data, "gzip")
    # No mtime, no name, no flags, OS "unknown": nothing about the machine or the moment.
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    d = zlib.decompressobj(31)
    assert d.decompress(blob) == data and d.eof and d.unused_data == b""
    assert int.from_bytes(blob[-8:-4], "little") == zlib.crc32(data)
    assert int.from_bytes(blob[-4:], "little") == len(data)
    assert gzip.decompress(blob) == data


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE])
def test_gzip_block_boundaries(size: int) -> None:
    data = os.urandom(size // 2) + b"z" * (size - size // 2)
    assert gzip.decompress(_compress(data, "gzip", piece=4096)) == data


def test_gzip_compresses_about_as_well_as_one_stream() -> None:
    data = _payload(2_000_000)
    ours = len(_compress(data, "gzip", level=6))
    single = len(gzip.compress(data, 6, mtime=0))
    assert ours <= single * 1.02


def test_levels_change_the_bytes_and_bad_levels_are_refused() -> None:
    data = _payload(400_000)
    assert _compress(data, "gzip", level=1) != _compress(data, "gzip", level=9)
    with pytest.raises(LayerError):
        CompressingWriter(io.BytesIO(), "gzip", 11)
    with pytest.raises(LayerError):
        CompressingWriter(io.BytesIO(), "zstd", 30)
    with pytest.raises(LayerError):
        CompressingWriter(io.BytesIO(), "lz4")  # type: ignore[arg-type]


def test_writer_never_closes_its_output() -> None:
    out = io.BytesIO()
    with CompressingWriter(out, "zstd") as w:
        w.write(b"abc")
    assert not out.closed
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue()) == b"abc"


def test_media_types() -> None:
    assert media_type_for("gzip") == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert media_type_for("zstd") == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert media_type_for("uncompressed") == "application/vnd.oci.image.layer.v1.tar"
    assert CompressingWriter(io.BytesIO(), "zstd").media_type.endswith("+zstd")
    assert compression_for_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert compression_for_media_type(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd") == "zstd"
    with pytest.raises(LayerError):
        compression_for_media_type("application/json")
