"""The copy-based snapshotter: a step's root as a plain copy of the layers below, and a
snapshot made by comparing the copy before and after the step.

Where overlay cannot be mounted (an old kernel, a filesystem that refuses to be an upper
layer, a user namespace without overlay), ``CopiedRoot`` gives a step the same view:

* ``CopiedRoot(lowers, folder)`` applies the snapshots below (bottom first) onto an empty
  folder, copying files in the kernel; then it records what every entry is. Hard links of
  a layer below become separate files, as they behave through overlay: a write to one
  name copies up that name only.
* The step runs in the folder and changes it in place.
* ``diff_into(upper)`` walks the folder again and writes what changed into ``upper`` in the
  overlay upper-dir form (through ``unpack_layer(mode="snapshot")``): everything after it
  (the layer tar, the snapshot store) cannot tell which snapshotter made it.

What counts as changed. The copy is made by us, so every file's inode and ctime are known
afterwards; the kernel moves a file's ctime on any change to its content or metadata (a
write, chmod, chown, utime, xattr, a new hard link), and no call sets it back. A file is
changed when its inode, ctime or any other recorded field differs, which also catches a
replacement by rename. The recording waits until the filesystem's clock has moved past the
copy, so a change in the same clock tick as the copy cannot go unseen. A directory is
changed on the same terms (a ctime moved by a child made and removed again, or a chmod to
the mode it had, is a change, as overlay copies the directory up for it), except where the
executor made mount points for the step: there only a different mode, owner, mtime or
xattr counts. A directory also appears, as it is now, as the parent of anything changed
below it. The layer then is the one overlay gives:

* a path gone since the copy is a whiteout (only the topmost of a removed tree);
* a directory that replaced anything (a file, or a directory removed and made again) is
  opaque and everything in it is new, as overlay marks a directory made over a whiteout;
* a new or changed entry is written whole; hard links among them stay links.

Overlay copies a file up when it is merely opened for writing; the copy does not count a
file nobody changed, so such a step's layer lacks the untouched file (nothing is lost: it
is the same in the layer below).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from builder.errors import LayerError
from builder.fsutil import copy_fd
from builder.layers.diff import Walker, changes, read_xattrs
from builder.layers.tar import TarWriter
from builder.layers.types import Change, log_warning
from builder.layers.unpack import unpack_layer

__all__ = ["CopiedRoot", "folder_identity"]


_PIPE_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class _Seen:
    """What an entry of the copy was when the step started."""

    ino: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    rdev: int
    # Directories only: their ctime moves with their children, so xattrs are compared,
    # and a directory removed and made again (often on the same inode number) is told
    # apart by its birth time.
    xattrs: tuple[tuple[str, bytes], ...] = ()
    children: frozenset[str] = frozenset()
    born_ns: int | None = None


def _seen(st: os.stat_result, full: str | None = None,
          children: frozenset[str] = frozenset()) -> _Seen:
    if full is None:
        return _Seen(st.st_ino, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                     st.st_mtime_ns, st.st_rdev)
    return _Seen(st.st_ino, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid, 0,
                 st.st_mtime_ns, st.st_rdev, tuple(sorted(read_xattrs(full).items())),
                 children, _birth_ns(full))


_statx: Any = None
_STATX_BTIME = 0x800
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_FDCWD = -100


def _birth_ns(path: str) -> int | None:
    """The inode's birth time (statx), or None where the filesystem keeps none."""
    import ctypes

    global _statx
    if _statx is None:
        _statx = getattr(ctypes.CDLL(None, use_errno=True), "statx", False)
    if not _statx:
        return None
    buf = bytearray(256)  # struct statx
    raw = (ctypes.c_char * len(buf)).from_buffer(buf)
    if _statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, raw) != 0:
        return None
    mask, = struct.unpack_from("=I", buf, 0)  # stx_mask
    if not mask & _STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("=qI", buf, 80)  # stx_btime
    return sec * 1_000_000_000 + nsec


def folder_identity(path: Path) -> tuple[int, int, int | None]:
    """(device, inode, birth time) of a folder: the same after a rename, and not taken
    over by a folder made later on a reused inode number."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, _birth_ns(os.fspath(path))


def _apply(snapshot: Path, dest: str) -> None:
    """Apply one snapshot onto the flat tree ``dest`` (the snapshots below it already
    applied), as overlay shows it merged: a whiteout removes, an opaque directory drops what
    the layers below put in it, an entry replaces whatever has its path (a directory
    replacing a directory keeps the content below). The snapshot is ours, read from disk:
    its entries come parents first, so every parent is a real directory by then."""
    dirs: list[tuple[str, int]] = []
    for change in changes(snapshot):
        target = os.path.join(dest, change.path) if change.path else dest
        if change.kind == "whiteout":
            _remove(target)
            continue
        if change.kind == "opaque":
            for name in os.listdir(target):
                _remove(os.path.join(target, name))
            continue
        mode = change.mode
        try:
            old = os.lstat(target)
        except FileNotFoundError:
            old = None
        if old is not None and not (stat.S_ISDIR(old.st_mode) and stat.S_ISDIR(mode)):
            _remove(target)
            old = None
        if stat.S_ISREG(mode):
            # A hard link of a layer below becomes a file of its own, as through overlay,
            # where a write to one name copies up that name only (the others keep the old
            # content and stay out of the step's layer).
            assert change.source is not None
            _copy_body(os.fspath(change.source), target)
        elif stat.S_ISDIR(mode):
            if old is None:
                os.mkdir(target, 0o700)
        elif stat.S_ISLNK(mode):
            os.symlink(change.link_target or "", target)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target, 0o600)
        else:
            try:
                os.mknod(target, stat.S_IFMT(mode) | 0o600,
                         os.makedev(change.devmajor, change.devminor))
            except PermissionError:
                log_warning(__name__, "cannot make device %s here (no privilege): left out",
                            change.path)
                continue
        _set_meta(target, change)
        if stat.S_ISDIR(mode):
            dirs.append((target, change.mtime_ns))
    for path, mtime_ns in reversed(dirs):  # deepest last written, so set first
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _copy_body(source: str, target: str) -> None:
    """A new file ``target`` (mode 0600 until ``_set_meta``) with the bytes of ``source``,
    copied in the kernel."""
    sfd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dfd = os.open(target, _NEW_FILE, 0o600)
        try:
            copy_fd(sfd, dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _own_copy(walker: Walker, rel: str, path: str, st: os.stat_result) -> os.stat_result:
    """Replace ``path``, one name of a hard-linked file, by a copy of its own (content,
    owner, mode, xattrs, mtime); returns the copy's lstat."""
    part = f"{path}.pb-unlink"
    try:
        _copy_body(path, part)
        _set_meta(part, walker.entry(rel, path, st, read_xattrs(path)))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
    os.rename(part, path)
    return os.lstat(path)


def _set_meta(target: str, change: Change) -> None:
    try:
        # before chmod: a chown clears set-uid bits
        os.chown(target, change.uid, change.gid, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EPERM):
            raise
        log_warning(__name__, "cannot give %s its owner %d:%d here: %s", change.path,
                    change.uid, change.gid, e.strerror)
    if not stat.S_ISLNK(change.mode):
        os.chmod(target, stat.S_IMODE(change.mode))
    for name, value in change.xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as e:
            log_warning(__name__, "cannot set xattr %s on %s here: %s", name, change.path, e.strerror)
    if not stat.S_ISDIR(change.mode):
        os.utime(target, ns=(change.mtime_ns, change.mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _names(full: str) -> list[str]:
    with os.scandir(full) as it:
        return sorted((e.name for e in it), key=os.fsencode)


def _unpack_changes(items: Iterable[Change], dest: Path) -> None:
    """Write ``items`` as a layer tar into a pipe and unpack it from the other end into
    ``dest`` as a snapshot, without the tar ever touching the disk."""
    read_fd, write_fd = os.pipe()
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb", buffering=_PIPE_BUFFER) as out:
                writer = TarWriter(out)
                for item in items:
                    writer.add(item)
                writer.close()
        except BrokenPipeError:
            pass  # the reader failed and closed its end; its error is the one to raise
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(e)

    thread = threading.Thread(target=produce, name="copydiff-tar", daemon=True)
    thread.start()
    try:
        with open(read_fd, "rb", buffering=_PIPE_BUFFER) as inp:
            unpack_layer(inp, dest, mode="snapshot")
    except BaseException:
        thread.join()
        if failed:  # a truncated tar only says that the writer stopped: say why
            raise failed[0] from None
        raise
    thread.join()
    if failed:
        raise failed[0]


class CopiedRoot:
    """The layers below a step applied onto ``folder`` (which must not exist yet), with a
    record of every entry; ``lowers`` are snapshot directories, top first."""

    def __init__(self, lowers: Sequence[Path], folder: Path) -> None:
        self.path = Path(folder)
        self.path.mkdir(mode=0o755)
        os.chmod(self.path, 0o755)  # the root of every image, as the overlay's upper has it
        for lower in reversed(list(lowers)):
            _apply(Path(lower), os.fspath(self.path))
        self._sockets: list[str] = []  # met by the last comparison
        self.rebase()

    def rebase(self) -> None:
        """Record what the folder holds now as the state the next step starts from (after
        ``diff_into``, the folder is the copy of the layers below plus the new one)."""
        for path in self._sockets:
            # A step's sockets are not in its layer (a tar cannot carry them): nor in the
            # copy the next step gets, as the overlay would show it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._sockets = []
        self.seen: dict[str, _Seen] = {}
        walker = Walker(self.path, overlay=False)
        newest = self._record(walker, {}, "", os.fspath(self.path), os.lstat(self.path))
        _wait_past(self.path, newest)

    def _record(self, walker: Walker, linked: dict[tuple[int, int], tuple[str, str]],
                rel: str, full: str, st: os.stat_result) -> int:
        """Records directory ``rel`` and everything below it; returns the newest ctime.
        ``linked``: the first name seen of each hard-linked file."""
        names = _names(full)
        self.seen[rel] = _seen(st, full, frozenset(names))
        newest = st.st_ctime_ns
        unlinked = False
        for name in names:
            child_rel, child = _join(rel, name), os.path.join(full, name)
            child_st = os.lstat(child)
            if stat.S_ISDIR(child_st.st_mode):
                newest = max(newest, self._record(walker, linked, child_rel, child, child_st))
                continue
            if child_st.st_nlink > 1 and stat.S_ISREG(child_st.st_mode):
                # Hard links a step made are in a layer below for the next step: through
                # overlay, a write to one name copies up that name only (as _apply does).
                first = linked.setdefault((child_st.st_dev, child_st.st_ino),
                                          (child_rel, child))
                if first[1] != child:
                    child_st = _own_copy(walker, child_rel, child, child_st)
                    unlinked = True
                    # the first name lost a link: its ctime moved
                    first_st = os.lstat(first[1])
                    self.seen[first[0]] = _seen(first_st)
                    newest = max(newest, first_st.st_ctime_ns)
            self.seen[child_rel] = _seen(child_st)
            newest = max(newest, child_st.st_ctime_ns)
        if unlinked:  # the copies were renamed in: the folder's times as they were
            os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            st = os.lstat(full)
            self.seen[rel] = _seen(st, full, frozenset(names))
            newest = max(newest, st.st_ctime_ns)
        return newest

    def changes(self, touched: Iterable[str] = ()) -> Iterator[Change]:
        """What the step changed, as snapshot ``Change`` values in ``diff.changes`` order.
        ``touched``: directories whose ctime the executor moved (mount points made in them
        and removed), which count as changed only when something visible of them did."""
        walker = Walker(self.path, overlay=False)
        yield from self._children(walker, frozenset(touched), "", os.fspath(self.path),
                                  fresh=False)

    def diff_into(self, upper: Path, touched: Iterable[str] = ()) -> None:
        """Write what the step changed into ``upper`` (empty) in overlay upper-dir form."""
        _unpack_changes(self.changes(touched), Path(upper))

    def _children(self, walker: Walker, touched: frozenset[str], rel: str, full: str, *,
                  fresh: bool) -> Iterator[Change]:
        names = _names(full)
        if not fresh:
            for name in sorted(self.seen[rel].children.difference(names), key=os.fsencode):
                yield Change(path=_join(rel, name), kind="whiteout")
        for name in names:
            child_rel, child = _join(rel, name), os.path.join(full, name)
            st = os.lstat(child)
            if stat.S_ISSOCK(st.st_mode):
                self._sockets.append(child)  # a tar cannot carry one (diff.changes drops them)
                continue
            old = None if fresh else self.seen.get(child_rel)
            if not stat.S_ISDIR(st.st_mode):
                if old is None or _seen(st) != old:
                    yield walker.entry(child_rel, child, st, read_xattrs(child))
                continue
            if old is None:  # a new directory: everything in it is new
                yield walker.entry(child_rel, child, st, read_xattrs(child))
                yield from self._children(walker, touched, child_rel, child, fresh=True)
            elif (not stat.S_ISDIR(old.mode) or old.ino != st.st_ino
                  or old.born_ns != _birth_ns(child)):
                # It replaced what was there: hides it all, as overlay's opaque directory.
                yield walker.entry(child_rel, child, st, read_xattrs(child))
                yield Change(path=child_rel, kind="opaque")
                yield from self._children(walker, touched, child_rel, child, fresh=True)
            else:
                # Any change to a directory moves its ctime: a child made (even if removed
                # again), a chmod or chown to what it already was, an xattr. Overlay copies
                # the directory up for each of these, so each puts it in the layer.
                own = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
                if own != (old.mode, old.uid, old.gid, old.mtime_ns) or (
                        st.st_ctime_ns != old.ctime_ns and (
                            child_rel not in touched
                            or tuple(sorted(read_xattrs(child).items())) != old.xattrs)):
                    yield walker.entry(child_rel, child, st, read_xattrs(child))
                    yield from self._children(walker, touched, child_rel, child, fresh=False)
                    continue
                # Unchanged itself: it appears only as the parent of a change below it.
                below = self._children(walker, touched, child_rel, child, fresh=False)
                first = next(below, None)
                if first is not None:
                    yield walker.entry(child_rel, child, st, read_xattrs(child))
                    yield first
                    yield from below


def _wait_past(folder: Path, newest_ns: int) -> None:
    """Return once a file changed now gets a ctime after ``newest_ns``: the filesystem
    stamps times from a clock that moves once a tick (1-10 ms), and a step's change in the
    tick the copy ended in would otherwise look unchanged."""
    probe = folder.parent / f".clock-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        for _ in range(1000):
            os.utime(fd)
            if os.fstat(fd).st_ctime_ns > newest_ns:
                return
            time.sleep(0.001)
        raise LayerError(f"the clock of the filesystem holding {folder} does not move",
                         hint="the copy-based snapshotter needs file change times")
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
