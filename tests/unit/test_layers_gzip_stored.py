"""Parallel gzip stores blocks that do not compress (random or already compressed data)
instead of deflating them: valid for gzip and Python's reader, the same bytes for any
thread count, about the input's size, and text next to them still compressed."""
from __future__ import annotations

import gzip
import io
import random
import shutil
import subprocess

import pytest

from builder.layers.gzip_parallel import BLOCK_SIZE, ParallelGzipWriter, incompressible

TEXT = b"".join(b"line %d of a log file with some words in it\n" % i for i in range(40_000))


def _gzip(data: bytes, threads: int, chunk: int = 70_000) -> bytes:
    out = io.BytesIO()
    writer = ParallelGzipWriter(out, 6, threads)
    for at in range(0, len(data), chunk):
        writer.write(data[at:at + chunk])
    writer.close()
    return out.getvalue()


def test_the_probe_tells_random_from_text() -> None:
    noise = random.Random(1).randbytes(BLOCK_SIZE)
    assert incompressible(noise)
    assert not incompressible(TEXT[:BLOCK_SIZE])
    # one compressible sample is enough to deflate the block
    assert not incompressible(noise[:BLOCK_SIZE // 2] + TEXT[:BLOCK_SIZE // 2])
    assert not incompressible(noise[:1000])  # too small to judge: deflated as before


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, BLOCK_SIZE, 3 * BLOCK_SIZE + 12_345])
def test_stored_blocks_are_valid_gzip_at_every_size(size: int) -> None:
    noise = random.Random(size).randbytes(size)
    blob = _gzip(noise, threads=2)
    assert gzip.decompress(blob) == noise
    assert len(blob) <= size + 64 + 5 * (size // 65_535 + 1)
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-t"], input=blob, check=False).returncode == 0


def test_mixed_data_same_bytes_for_any_thread_count() -> None:
    rng = random.Random(7)
    data = rng.randbytes(5 * BLOCK_SIZE) + TEXT + rng.randbytes(BLOCK_SIZE + 99) + TEXT[:5000]
    one, four = _gzip(data, threads=1), _gzip(data, threads=4, chunk=12_345)
    assert one == four
    assert gzip.decompress(one) == data
    assert len(one) < len(data) - len(TEXT) // 2  # the text was compressed, not stored
