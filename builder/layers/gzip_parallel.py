"""A pigz-style gzip writer: 128 KiB blocks deflated in a thread pool, one gzip member out.

Each block is compressed as raw deflate primed with the previous 32 KiB of input (so the
ratio stays close to a single stream) and ended with a sync flush, which leaves it on a
byte boundary; the last block is ended with Z_FINISH. The blocks concatenate into one
valid deflate stream. The output depends only on the input bytes, the level and the fixed
block size, never on the number of threads or their timing, so layer digests are
reproducible on any machine with the same zlib. zlib releases the GIL while deflating.
Blocks whose samples do not compress are stored (level 0) instead of searched in vain.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

__all__ = ["BLOCK_SIZE", "GZIP_HEADER", "ParallelGzipWriter", "incompressible"]

BLOCK_SIZE = 128 * 1024
_DICT_SIZE = 32 * 1024
# Magic, deflate, no flags, mtime 0, no extra flags, OS 255 ("unknown"): no name, no time,
# nothing that depends on the machine or the moment.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


_PROBE = 2048  # bytes looked at, three times per block, to spot data that will not shrink


def incompressible(block: bytes) -> bool:
    """Whether three samples of ``block`` (start, middle, end) all fail to shrink by 4% at
    level 1: already compressed or random data, which deflate at any level only stores
    anyway, after spending as long as on text looking for matches (about 30 MB/s a core).
    Decided from the bytes alone, so the output stays deterministic."""
    if len(block) < 8 * _PROBE:
        return False
    probe = zlib.compressobj(1, zlib.DEFLATED, -15, 8)
    mid = len(block) // 2
    for at in (0, mid, len(block) - _PROBE):
        sample = block[at:at + _PROBE]
        # a full flush ends the sample and forgets it: each sample is judged alone
        if len(probe.compress(sample) + probe.flush(zlib.Z_FULL_FLUSH)) < len(sample) * 0.96:
            return False
    return True


def _stored(block: bytes, final: bool) -> bytes:
    """``block`` as deflate stored blocks (at most 65,535 bytes each). The stream is on a
    byte boundary here (every block ends so), and a stored block keeps it there."""
    parts = []
    pos, n = 0, len(block)
    while True:
        chunk = block[pos:pos + 0xFFFF]
        pos += len(chunk)
        last = final and pos >= n
        parts.append(struct.pack("<BHH", 1 if last else 0, len(chunk), len(chunk) ^ 0xFFFF))
        parts.append(chunk)
        if pos >= n:
            return b"".join(parts)


def _deflate_block(block: bytes, dictionary: bytes, level: int, final: bool) -> bytes:
    if level > 0 and incompressible(block):
        return _stored(block, final)  # what deflate would reach, at memory speed
    if dictionary:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter:
    """Writes one deterministic gzip member to ``out``; ``close()`` finishes it (``out``
    stays open). Memory is bounded: at most two blocks per worker are in flight."""

    def __init__(self, out: BinaryIO, level: int = 6, threads: int | None = None) -> None:
        self._out = out
        self._level = level
        self._workers = max(1, threads if threads is not None else (os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._buf = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        out.write(GZIP_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed gzip writer")
        n = len(data)
        self._crc = zlib.crc32(data, self._crc)
        self._size += n
        self._buf += data
        if len(self._buf) >= BLOCK_SIZE:
            view = memoryview(self._buf)
            start = 0
            while len(self._buf) - start >= BLOCK_SIZE:
                self._submit(bytes(view[start : start + BLOCK_SIZE]), final=False)
                start += BLOCK_SIZE
            view.release()
            del self._buf[:start]
        return n

    def _submit(self, block: bytes, *, final: bool) -> None:
        self._pending.append(
            self._pool.submit(_deflate_block, block, self._tail, self._level, final)
        )
        self._tail = block[-_DICT_SIZE:]
        while len(self._pending) > 2 * self._workers:
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(bytes(self._buf), final=True)
            self._buf.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
