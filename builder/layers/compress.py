"""Compression of layer blobs: detection by magic bytes, streaming decompression, and a
deterministic compressing writer (parallel gzip, multi-threaded zstd, or none).

Owns the mapping between compression names and OCI layer media types.
"""
from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from builder.errors import LayerError
from builder.layers.types import (
    MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP,
    MEDIA_TYPE_TAR_ZSTD,
    Compression,
)

if TYPE_CHECKING:
    import zstandard

__all__ = [
    "Detected",
    "detect_compression",
    "open_decompressed",
    "CompressingWriter",
    "media_type_for",
    "compression_for_media_type",
    "DEFAULT_LEVELS",
    "check_level",
]

Detected = Literal["gzip", "zstd", "bzip2", "xz", "uncompressed"]

DEFAULT_LEVELS: dict[str, int] = {"gzip": 6, "zstd": 3}
_LEVELS = {"gzip": (0, 9, "0-9"), "zstd": (-7, 22, "-7..22")}


def check_level(compression: str, level: int) -> None:
    """Refuse a level the compressor does not take (uncompressed takes any)."""
    bounds = _LEVELS.get(compression)
    if bounds is not None and not bounds[0] <= level <= bounds[1]:
        raise LayerError(f"{compression} level must be {bounds[2]}, not {level}")

_MAGIC: tuple[tuple[bytes, Detected], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)

_MEDIA_TYPES: dict[str, str] = {
    "gzip": MEDIA_TYPE_TAR_GZIP,
    "zstd": MEDIA_TYPE_TAR_ZSTD,
    "uncompressed": MEDIA_TYPE_TAR,
}
# Docker's schema 2 names for the same blobs, accepted when reading manifests.
_DOCKER_MEDIA_TYPES: dict[str, Compression] = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "uncompressed",
}


def media_type_for(compression: Compression) -> str:
    """The OCI layer media type of a blob compressed with ``compression``."""
    try:
        return _MEDIA_TYPES[compression]
    except KeyError:
        raise LayerError(f"unknown layer compression {compression!r}",
                         hint="use gzip, zstd or uncompressed") from None


def compression_for_media_type(media_type: str) -> Compression:
    """The compression a layer media type (OCI or Docker, incl. non-distributable) implies."""
    if media_type in _DOCKER_MEDIA_TYPES:
        return _DOCKER_MEDIA_TYPES[media_type]
    base = media_type.replace(".nondistributable", "")
    for name, mt in _MEDIA_TYPES.items():
        if base == mt:
            return name  # type: ignore[return-value]
    raise LayerError(f"not a layer media type: {media_type!r}")


def detect_compression(head: bytes) -> Detected:
    """The compression of a blob from its first bytes (6 are enough)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "uncompressed"


class _Prefixed(io.RawIOBase):
    """A stream that first returns bytes already read (the magic), then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._rest, "readinto", None)
        if readinto is not None:  # straight into the reader's buffer: no copy of 1 GiB layers
            try:
                return readinto(buffer) or 0
            except (NotImplementedError, io.UnsupportedOperation):
                pass
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_head(fileobj: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = fileobj.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_decompressed(fileobj: BinaryIO) -> BinaryIO:
    """A readable stream of ``fileobj``'s bytes, decompressed according to its magic bytes
    (gzip, zstd, bzip2, xz; anything else is passed through). Reads ``fileobj`` forward
    only, so pipes and HTTP bodies work. Closing the result does not close ``fileobj``.

    A compressed stream is decompressed one chunk ahead in a thread (zlib, zstd, bz2 and
    lzma let go of the GIL), so decompressing overlaps what the reader does with the bytes
    (hashing, compressing again, unpacking); close the result before ``fileobj``."""
    head = _read_head(fileobj, 6)
    kind = detect_compression(head)
    raw: BinaryIO = io.BufferedReader(_Prefixed(head, fileobj), _CHUNK)  # type: ignore[arg-type]
    if kind == "uncompressed":
        return raw
    return io.BufferedReader(_ReadAhead(_chunks(kind, raw)), _CHUNK)  # type: ignore[return-value]


_CHUNK = 1 << 20
_AHEAD = 4  # chunks decompressed before the reader takes them: memory stays a few MiB


def _chunks(kind: Detected, raw: BinaryIO) -> Iterator[bytes]:
    if kind == "gzip":
        yield from _gunzip(raw)
        return
    stream: BinaryIO
    # The compressors of the other formats are loaded only by a layer that needs them:
    # most builds see gzip alone, and each library costs every start-up a few ms.
    if kind == "zstd":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(  # type: ignore[assignment]
            raw, read_size=_CHUNK, read_across_frames=True, closefd=False)
    elif kind == "bzip2":
        import bz2

        stream = bz2.BZ2File(raw, "rb")  # type: ignore[assignment]
    else:
        import lzma

        stream = lzma.LZMAFile(raw, "rb")  # type: ignore[assignment]
    with stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


def _bad_gzip(message: str) -> OSError:
    import gzip

    return gzip.BadGzipFile(message)


def _gunzip(raw: BinaryIO) -> Iterator[bytes]:
    """gzip members one after the other (zeros between them allowed), as GzipFile reads
    them, but with zlib checking each member's CRC and length itself and in 1 MiB steps:
    GzipFile reads 8 KiB at a time and computes the CRC again in Python's thread (a third
    of the time of decompressing a layer). Errors are GzipFile's: EOFError for a cut
    stream, BadGzipFile (an OSError) for damage."""
    inflate, started = zlib.decompressobj(31), False
    while data := raw.read(_CHUNK):
        while data:
            started = True
            while True:  # at most 1 MiB out a call: memory stays flat on a bomb too
                try:
                    out = inflate.decompress(data, _CHUNK)
                except zlib.error as exc:
                    raise _bad_gzip(f"damaged gzip data: {exc}") from None
                if out:
                    yield out
                data = inflate.unconsumed_tail
                if not data and len(out) < _CHUNK:
                    break
            if not inflate.eof:
                break
            data = inflate.unused_data.lstrip(b"\0")
            inflate, started = zlib.decompressobj(31), False
    if started:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


class _ReadAhead(io.RawIOBase):
    """A stream of the chunks an iterator yields, the iterator run in a thread of its own."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        import queue  # only a read-ahead needs it: writing a layer does not

        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_AHEAD)
        self._stop = threading.Event()
        self._chunk = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(chunks,),
                                        name="decompress", daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterator[bytes]) -> None:
        item: bytes | BaseException | None = None
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
        except BaseException as exc:  # handed to the reader, raised in its thread
            item = exc
        self._put(item)

    def _put(self, item: bytes | BaseException | None) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            if self._done:
                return 0
            item = self._queue.get()
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._chunk = memoryview(item)
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()  # the thread stops at its next chunk; it never reads after this
            self._thread.join()
        super().close()


class CompressingWriter:
    """A write-only stream that compresses into ``out`` (which it never closes).

    gzip: deterministic parallel blocks (see gzip_parallel); zstd: all cores, a frame
    without a content size but with a checksum (the same bytes for any thread count);
    uncompressed: a pass-through. Call ``close()`` (or use ``with``) to finish the stream.
    """

    def __init__(self, out: BinaryIO, compression: Compression = "gzip",
                 level: int | None = None, *, threads: int | None = None) -> None:
        self.compression = compression
        self.media_type = media_type_for(compression)
        self.level = level if level is not None else DEFAULT_LEVELS.get(compression, 0)
        self._out = out
        self._closed = False
        self._gz: Any = None  # a gzip_parallel.ParallelGzipWriter
        self._zst: zstandard.ZstdCompressionWriter | None = None
        check_level(compression, self.level)
        if compression == "gzip":
            from builder.layers.gzip_parallel import ParallelGzipWriter

            self._gz = ParallelGzipWriter(out, self.level, threads)
        elif compression == "zstd":
            import zstandard

            # threads=-1 means one worker per core; any threads >= 1 gives identical output.
            cctx = zstandard.ZstdCompressor(
                level=self.level,
                threads=threads if threads is not None else -1,
                write_checksum=True,
                write_content_size=False,
            )
            self._zst = cctx.stream_writer(out, closefd=False)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._gz is not None:
            return self._gz.write(data)
        if self._zst is not None:
            self._zst.write(data)
            return len(data)
        self._out.write(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._gz is not None:
            self._gz.close()
        elif self._zst is not None:
            import zstandard

            self._zst.flush(zstandard.FLUSH_FRAME)
            self._zst.close()

    def __enter__(self) -> CompressingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
