"""Leases: what a live process holds in the store, so prune and tmp/ clean-up leave it be.

Every process that opens a store takes a lease: a file ``leases/<pid>-<start ns>-<rand>``
on which it holds a shared flock for as long as it lives (the kernel drops the lock when
the process dies, SIGKILL included). The file is made in tmp/, locked, then renamed into
leases/, so no other process can ever see it unlocked while its owner lives.

A lease lists, one line each (``key <hex>``, ``diff <hex>``, ``blob <hex>``), the index
entries, snapshots and blobs its owner has used. Lines are appended with O_APPEND and
never rewritten; a crash can only leave a partial last line, which readers ignore.

Prune and a holder meet on a per-entry lock (``locks/e-<hex>.lock``): the holder takes
it shared while it appends the entry to its lease, prune takes it exclusive while it
reads the leases and deletes. So either prune deleted the entry before the holder's line
was written (the holder then finds it missing and makes it again), or prune sees the
line and keeps the entry. Nothing is held during a long deletion: prune renames the
entry aside first.

A lease whose flock can be taken exclusively belongs to a dead process: it is removed.
A tmp/ entry is stale when its ctime is older than the start of every live lease (by a
margin for the coarse clock the kernel stamps files with): whatever made it is dead.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Lease", "LeaseInfo", "entry_lock", "live_leases", "process_lease", "stale_tmp_entries"]

# Files are stamped with a coarse clock that can run a tick behind time.time_ns().
_CLOCK_MARGIN_NS = 50_000_000  # a jiffy is at most 10 ms
KINDS = ("key", "diff", "blob")


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease as another process sees it."""

    path: Path
    pid: int
    started_ns: int
    entries: frozenset[str]  # "key <hex>", "diff <hex>", "blob <hex>"


class Lease:
    """This process's lease on one store (one per store root per process)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.started_ns = time.time_ns()
        name = f"{os.getpid()}-{self.started_ns}-{os.urandom(4).hex()}"
        (self.root / "leases").mkdir(parents=True, exist_ok=True)
        aside = self.root / "tmp" / f"lease-{name}"
        self.path = self.root / "leases" / name
        self._fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        os.rename(aside, self.path)
        self._held: set[str] = set()
        self._mutex = threading.Lock()
        self.closed = False

    def hold(self, kind: str, hexd: str) -> None:
        """List an entry as used by this process (once; cheap when already listed)."""
        line = f"{kind} {hexd}"
        if line in self._held or self.closed:
            return
        with self._mutex:
            if line in self._held:
                return
            with entry_lock(self.root, hexd, shared=True):
                os.write(self._fd, (line + "\n").encode())
            self._held.add(line)

    def holds(self, kind: str, hexd: str) -> bool:
        return f"{kind} {hexd}" in self._held

    def close(self) -> None:
        """End the lease (at exit): the file goes, then the lock."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)


_leases: dict[str, Lease] = {}
_leases_mutex = threading.Lock()


def process_lease(root: Path) -> Lease:
    """This process's lease on the store at ``root``, taken the first time it is asked for."""
    key = os.path.realpath(root)
    with _leases_mutex:
        lease = _leases.get(key)
        if lease is None or lease.closed:
            lease = _leases[key] = Lease(Path(root))
        return lease


@atexit.register
def _close_all() -> None:
    for lease in list(_leases.values()):
        lease.close()


@contextlib.contextmanager
def entry_lock(root: Path, hexd: str, *, shared: bool = False,
               blocking: bool = True) -> Iterator[bool]:
    """The lock an entry's holders (shared) and prune (exclusive) meet on. Yields whether
    it was taken (always True when blocking)."""
    path = Path(root) / "locks" / f"e-{hexd}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, op | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _parse_name(name: str) -> tuple[int, int] | None:
    parts = name.split("-")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def live_leases(root: Path, *, reap: bool = True) -> list[LeaseInfo]:
    """The leases whose owners live (their entries read now); dead ones are removed."""
    out: list[LeaseInfo] = []
    folder = Path(root) / "leases"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return out
    own = {lease.path.name for lease in _leases.values() if not lease.closed}
    for name in names:
        parsed = _parse_name(name)
        path = folder / name
        if parsed is None:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            alive = name in own
            if not alive:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    alive = True
            if not alive:
                if reap:
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
        finally:
            os.close(fd)
        # A line not ended by "\n" is being written (or was cut short): not counted.
        lines = data.decode(errors="replace").split("\n")[:-1]
        out.append(LeaseInfo(path, parsed[0], parsed[1], frozenset(lines)))
    return out


def stale_tmp_entries(root: Path, leases: list[LeaseInfo]) -> list[Path]:
    """tmp/ entries made before every live lease began: their makers are dead.

    Every process that writes to tmp/ holds a lease from before its first write, so an
    entry whose ctime precedes the oldest live lease cannot belong to a live process."""
    if not leases:
        return []  # the caller's own lease is always live; none means we cannot tell
    oldest = min(info.started_ns for info in leases) - _CLOCK_MARGIN_NS
    out: list[Path] = []
    tmp = Path(root) / "tmp"
    try:
        entries = list(os.scandir(tmp))
    except FileNotFoundError:
        return out
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_ctime_ns < oldest:
            out.append(Path(entry.path))
    return out
