"""Creating small regular files on a few threads while the unpacker goes on reading the tar.

Unpacking a root filesystem is mostly the kernel creating files (open O_CREAT, write,
fchown, fchmod, futimens, close), which releases the GIL; done one after the other, the
tar parsing and the kernel's work never overlap. ``FileWriter.submit`` hands a file whose
bytes are already read to a small pool; the unpacker calls ``drain`` before anything that
must see those files (a lookup of a path still pending, a removal, a hard link, the
directories' times at the end). Memory stays bounded: at most ``max_bytes`` of content
(and ``max_files`` files) in flight, the oldest waited for first.

Files are created O_EXCL|O_NOFOLLOW, as the unpacker does itself, so a worker can never
write through a link or over something that appeared meanwhile: it fails, and the failure
is raised as a LayerError naming the entry at the next ``drain`` or ``wait``.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import LayerError

if TYPE_CHECKING:  # concurrent.futures (and logging with it) only once a file is written
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["FileWriter", "PendingFile"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class PendingFile:
    """A small file of a layer waiting to be written by the pool."""

    path: str                      # absolute, its parent already resolved safely
    entry: str                     # the tar entry's name, for errors
    data: bytes
    mode: int
    owner: tuple[int, int] | None  # (uid, gid) to set, or None to leave ours
    times_ns: tuple[int, int]


def write_file(f: PendingFile) -> None:
    fd = os.open(f.path, _FLAGS, 0o600)
    try:
        view = memoryview(f.data)
        while view:
            view = view[os.write(fd, view):]
        if f.owner is not None:  # owner first: chown clears setuid/setgid, chmod sets them
            os.fchown(fd, *f.owner)
        os.fchmod(fd, f.mode)
        os.utime(fd, ns=f.times_ns)
    finally:
        os.close(fd)


class FileWriter:
    def __init__(self, *, threads: int | None = None, max_bytes: int = 32 << 20,
                 max_files: int = 512) -> None:
        self.threads = threads or min(8, 2 * (os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: deque[tuple[Future[None], PendingFile]] = deque()
        self._bytes = 0
        self.max_bytes, self.max_files = max_bytes, max_files
        self.pending: set[str] = set()  # absolute paths submitted and not yet waited for

    def submit(self, f: PendingFile) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="unpack")
        while self._inflight and (self._bytes + len(f.data) > self.max_bytes
                                  or len(self._inflight) >= self.max_files):
            self._wait_oldest()
        self._inflight.append((self._pool.submit(write_file, f), f))
        self._bytes += len(f.data)
        self.pending.add(f.path)

    def _wait_oldest(self) -> None:
        future, f = self._inflight.popleft()
        self._bytes -= len(f.data)
        self.pending.discard(f.path)
        try:
            future.result()
        except OSError as e:
            raise LayerError(f"cannot unpack layer entry {f.entry!r}: {e}") from e

    def drain(self) -> None:
        """Every submitted file is written (or its failure raised)."""
        while self._inflight:
            self._wait_oldest()

    def close(self) -> None:
        """Waits for every file, raising the first failure, and stops the threads."""
        self.drain()
        self.abort()

    def abort(self) -> None:
        """Stops the threads after what they are writing (after a failure elsewhere: the
        files not started are dropped, failures ignored); safe to call twice."""
        for future, _ in self._inflight:
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._inflight.clear()
        self._bytes = 0
        self.pending.clear()
