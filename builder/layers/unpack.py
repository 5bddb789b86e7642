"""Unpacking layer tars, safely, into a snapshot or onto a flattened tree.

mode="snapshot" writes the layer as an overlayfs upper directory (see diff.py): a
``.wh.NAME`` entry becomes a character device 0:0 ``NAME`` (unprivileged mknod of a
whiteout works on Linux >= 5.8; where it does not, the tar spelling, an empty file
``.wh.NAME``, is kept and diff.py reads it the same); ``.wh..wh..opq`` sets
``trusted.overlay.opaque=y`` as root, ``user.overlay.opaque=y`` otherwise (falling back to
an empty ``.wh..wh..opq`` file where xattrs cannot be set). A directory that replaces a
whiteout of the same layer becomes opaque, as the layer means. ``dest`` is expected to be
empty: whatever it holds counts as part of this layer.

mode="apply" applies the layer onto an existing flattened tree: a whiteout deletes its
target, an opaque marker empties its directory, except what this same layer has already
put there (as umoci does).

Safety: names are cleaned (leading '/' stripped, '..' refused), each entry's parent is
resolved with ``secure_join`` so symlinks (of earlier layers or this one) cannot carry a
write outside ``dest``, files are created O_EXCL|O_NOFOLLOW after clobbering, hard links
must name an existing non-directory inside ``dest``, and overlay's own xattrs in a layer
are dropped. Any violation raises LayerError naming the entry. Device nodes that cannot be
made (no privilege) and xattrs that cannot be set are skipped with a warning in the
result. Owners are kept (numeric ids) when running as root or when ``same_owner=True``;
as root of a rootless user namespace, ids it does not map are unpacked as 0 with a warning.
Directories get their mode and times last, deepest first, after their children.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO, Literal

from builder.digest import Digest
from builder.errors import LayerError
from builder.layers.compress import open_decompressed
from builder.layers.diff import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    is_overlay_xattr,
    read_xattrs,
)
from builder.layers.filewriter import FileWriter, PendingFile
from builder.layers.paths import clean_name, join_rel, secure_join
from builder.layers.types import UnpackResult, log_warning

__all__ = ["unpack_layer", "unpack_blob", "UnpackMode"]


UnpackMode = Literal["snapshot", "apply"]
_CHUNK = 1 << 20
_SMALL = 1 << 20  # files up to this size are read whole and written on the FileWriter's threads
_XATTR_PREFIX = "SCHILY.xattr."
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class _HashingReader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> Digest:
        return Digest.sha256(self._hash.hexdigest())


def _parse_time_ns(text: str) -> int:
    """A PAX time ("1700000000.123456789", maybe negative) in nanoseconds, exactly."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9]))


def _times_ns(ti: tarfile.TarInfo) -> tuple[int, int]:
    try:
        mtime = (_parse_time_ns(ti.pax_headers["mtime"]) if "mtime" in ti.pax_headers
                 else int(ti.mtime) * 1_000_000_000)
        atime = _parse_time_ns(ti.pax_headers["atime"]) if "atime" in ti.pax_headers else mtime
    except ValueError:
        raise LayerError(f"layer entry {ti.name!r} has a malformed time") from None
    return atime, mtime


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class _Unpacker:
    def __init__(self, dest: Path, mode: UnpackMode, same_owner: bool | None) -> None:
        if mode not in ("snapshot", "apply"):
            raise LayerError(f"unknown unpack mode {mode!r}")
        os.makedirs(dest, exist_ok=True)
        self.root = os.path.realpath(dest)
        self.mode = mode
        from builder.executor.userns import in_user_namespace

        self.is_root = os.geteuid() == 0
        # Root of a (rootless) user namespace: owners it maps can be given, trusted.* xattrs
        # cannot be set, and overlay reads user.overlay.* (it is mounted with userxattr).
        self.userns = self.is_root and in_user_namespace()
        self.id_ranges: tuple[list[tuple[int, int]], ...] = ()
        if self.userns:
            from builder.executor.userns import mapped_ranges

            self.id_ranges = (mapped_ranges("uid"), mapped_ranges("gid"))
        self.same_owner = self.is_root if same_owner is None else same_owner
        self.upper: set[str] = set()  # what this layer made, and its ancestors (apply mode)
        self.dir_meta: dict[str, tarfile.TarInfo] = {}
        self.saved_times: dict[str, tuple[int, int]] = {}
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        # entry dirname -> its resolved parent, known to be real directories all the way
        # down: most entries share a parent, and resolving it again costs a lstat per
        # component. Valid while nothing is removed (the only way a checked directory can
        # turn into something else, since we are the tree's only writer).
        self.parents: dict[str, str] = {}
        # whether .wh.NAME files may be there (kept where mknod is refused, or left in a
        # dest that was not empty): only then must an entry look for its sibling's
        with os.scandir(self.root) as it:
            self.whiteout_files = next(it, None) is not None
        self.files = FileWriter()

    def lstat(self, path: str) -> os.stat_result | None:
        """lstat, after the file writer has made ``path`` if it was handed to it."""
        if path in self.files.pending:
            self.files.drain()
        return _lstat(path)

    # -- helpers ---------------------------------------------------------------------
    def abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def warn(self, message: str, *, once: str | None = None) -> None:
        if once is not None:
            if once in self._warned:
                return
            self._warned.add(once)
        log_warning(__name__, "%s", message)
        self.warnings.append(message)

    def save_times(self, rel: str) -> None:
        """Remember a directory's times before we change its content, to put them back."""
        if rel in self.saved_times or rel in self.dir_meta:
            return
        st = self.lstat(self.abs(rel))
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.saved_times[rel] = (st.st_atime_ns, st.st_mtime_ns)

    def mark_upper(self, rel: str) -> None:
        while rel and rel not in self.upper:
            self.upper.add(rel)
            rel = rel.rpartition("/")[0]

    def remove(self, rel: str, st: os.stat_result) -> None:
        self.files.drain()  # what is removed may hold (or be) a file still being written
        self.parents.clear()
        self.save_times(rel.rpartition("/")[0])
        path = self.abs(rel)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def ensure_dir(self, rel: str, entry: str) -> None:
        """Creates the missing directories of ``rel`` (already securely resolved)."""
        cur = ""
        for part in rel.split("/") if rel else []:
            nxt = join_rel(cur, part)
            st = self.lstat(self.abs(nxt))
            if st is None or (self.mode == "snapshot" and _is_whiteout_device(st)):
                self.save_times(cur)
                if st is not None:
                    os.unlink(self.abs(nxt))
                os.mkdir(self.abs(nxt), 0o755)
                if st is not None:  # a new directory where this layer deleted one
                    self.set_opaque(nxt)
            elif not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"layer entry {entry!r}: {nxt!r} is not a directory")
            cur = nxt

    # -- whiteouts -------------------------------------------------------------------
    def set_opaque(self, rel: str) -> None:
        path = self.abs(rel)
        names = ["trusted.overlay.opaque", "user.overlay.opaque"] \
            if self.is_root and not self.userns else []
        names = names or ["user.overlay.opaque"]
        for name in names:
            try:
                os.setxattr(path, name, b"y", follow_symlinks=False)
                return
            except OSError:
                continue
        self.warn("cannot set overlay opaque xattrs here; keeping .wh..wh..opq files",
                  once="opaque")
        fd = os.open(os.path.join(path, OPAQUE_MARKER), os.O_WRONLY | os.O_CREAT, 0)
        os.close(fd)

    def make_whiteout(self, rel: str) -> None:
        path = self.abs(rel)
        try:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        except PermissionError:
            self.warn("cannot make whiteout devices here; keeping .wh.NAME files",
                      once="whiteout")
            self.whiteout_files = True
            parent, _, base = rel.rpartition("/")
            fd = os.open(self.abs(join_rel(parent, WHITEOUT_PREFIX + base)),
                         os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0)
            os.close(fd)

    def whiteout(self, parent: str, base: str, entry: str) -> None:
        opaque = base == OPAQUE_MARKER
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) and not opaque:
            self.warn(f"ignoring aufs metadata entry {entry!r}")
            return
        name = base[len(WHITEOUT_PREFIX):]
        if not opaque and name in ("", ".", ".."):
            raise LayerError(f"layer entry {entry!r} is not a valid whiteout")
        target = parent if opaque else join_rel(parent, name)
        if self.mode == "snapshot":
            self.ensure_dir(parent, entry)
            if opaque:
                self.set_opaque(parent)
                return
            st = self.lstat(self.abs(target))
            if st is None:
                self.save_times(parent)
                self.make_whiteout(target)
            elif stat.S_ISDIR(st.st_mode):
                self.set_opaque(target)  # deleted below, recreated by this same layer
            return
        if self.lstat(self.abs(target)) is not None:
            self.remove_untouched(target, keep=opaque)

    def remove_untouched(self, rel: str, *, keep: bool) -> None:
        st = os.lstat(self.abs(rel))
        if rel in self.upper or keep:
            if stat.S_ISDIR(st.st_mode):
                for name in sorted(os.listdir(self.abs(rel))):
                    child = join_rel(rel, name)
                    cst = os.lstat(self.abs(child))
                    if child in self.upper:
                        self.remove_untouched(child, keep=False)
                    else:
                        self.remove(child, cst)
            return
        self.remove(rel, st)

    # -- entries ---------------------------------------------------------------------
    def entry(self, tf: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        name = clean_name(ti.name)
        if not name:
            if not ti.isdir():
                raise LayerError(f"layer entry {ti.name!r} would replace the root directory")
            self.dir_meta[""] = ti
            self.apply_owner_xattrs("", ti)
            return
        dirname, _, base = name.rpartition("/")
        parent = self.parents.get(dirname)
        if parent is None:
            if self.files.pending:  # resolving lstats each ancestor: none may be in flight
                self.files.drain()
            parent = secure_join(self.root, dirname, entry=ti.name)
            if base.startswith(WHITEOUT_PREFIX):
                self.whiteout(parent, base, ti.name)
                return
            self.ensure_dir(parent, ti.name)
            self.parents[dirname] = parent
        elif base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base, ti.name)
            return
        rel = join_rel(parent, base)
        path = self.abs(rel)
        replaced_whiteout = False
        st = self.lstat(path)
        if st is not None and not (ti.isdir() and stat.S_ISDIR(st.st_mode)):
            replaced_whiteout = _is_whiteout_device(st)
            self.remove(rel, st)
        else:
            self.save_times(parent)
        if self.mode == "snapshot" and self.whiteout_files:
            sibling = self.abs(join_rel(parent, WHITEOUT_PREFIX + base))
            if self.lstat(sibling) is not None:
                os.unlink(sibling)
                replaced_whiteout = True
        if ti.type in _REGULAR:
            if ti.issparse():
                raise LayerError(f"layer entry {ti.name!r} is a sparse file (unsupported)")
            self.regular(tf, ti, path)
        elif ti.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(path, 0o700)
            self.dir_meta[rel] = ti
            self.apply_owner_xattrs(rel, ti)
            if replaced_whiteout and self.mode == "snapshot":
                self.set_opaque(rel)
        elif ti.issym():
            os.symlink(ti.linkname, path)
            self.apply_meta(path, ti, symlink=True)
        elif ti.islnk():
            self.hardlink(ti, path)
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            if not self.node(ti, path):
                return
        else:
            raise LayerError(f"layer entry {ti.name!r} has an unknown type {ti.type!r}")
        self.mark_upper(rel)

    def regular(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, path: str) -> None:
        if ti.size <= _SMALL and not any(k.startswith(_XATTR_PREFIX) for k in ti.pax_headers):
            src = tf.extractfile(ti)
            data = src.read() if src is not None else b""
            if len(data) != ti.size:
                raise LayerError(f"layer entry {ti.name!r} is cut short")
            self.files.submit(PendingFile(
                path, ti.name, data, ti.mode & 0o7777,
                self.owner(ti), _times_ns(ti)))
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out:
            src = tf.extractfile(ti)
            if src is not None:
                shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            self.apply_meta(path, ti, fd=out.fileno())

    def hardlink(self, ti: tarfile.TarInfo, path: str) -> None:
        target = clean_name(ti.linkname)
        tdir, _, tbase = target.rpartition("/")
        if not tbase:
            raise LayerError(f"layer entry {ti.name!r} is a hard link to the root")
        self.files.drain()  # the target may be a file still being written
        tpath = self.abs(join_rel(secure_join(self.root, tdir, entry=ti.name), tbase))
        tst = _lstat(tpath)
        if tst is None or stat.S_ISDIR(tst.st_mode):
            raise LayerError(f"layer entry {ti.name!r} is a hard link to {ti.linkname!r}, "
                             "which is not a file of this layer")
        os.link(tpath, path, follow_symlinks=False)

    def node(self, ti: tarfile.TarInfo, path: str) -> bool:
        kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK if ti.isblk() else stat.S_IFIFO
        if kind == stat.S_IFCHR and ti.devmajor == 0 and ti.devminor == 0:
            self.warn(f"layer entry {ti.name!r} is a 0:0 device, which overlay reads as a "
                      "whiteout")
        try:
            os.mknod(path, kind | 0o600, os.makedev(ti.devmajor, ti.devminor))
        except PermissionError:
            self.warn(f"skipping device {ti.name!r}: no permission to create device nodes")
            return False
        self.apply_meta(path, ti)
        return True

    # -- metadata --------------------------------------------------------------------
    def xattrs_of(self, ti: tarfile.TarInfo) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key, value in ti.pax_headers.items():
            if not key.startswith(_XATTR_PREFIX):
                continue
            name = key[len(_XATTR_PREFIX):]
            if is_overlay_xattr(name):
                self.warn(f"layer entry {ti.name!r}: ignoring overlay xattr {name}")
                continue
            out[name] = value.encode("utf-8", "surrogateescape")
        return out

    def set_xattrs(self, target: int | str, ti: tarfile.TarInfo, *, clear: bool) -> None:
        wanted = self.xattrs_of(ti)
        follow = isinstance(target, int)
        if clear and isinstance(target, str):
            for name in read_xattrs(target):
                if name not in wanted:
                    os.removexattr(target, name, follow_symlinks=False)
        for name, value in sorted(wanted.items()):
            try:
                if follow:
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    self.warn("the destination file system does not support these xattrs",
                              once="enotsup")
                elif e.errno == errno.EPERM:
                    # Unprivileged: trusted.*/security.*; anyone: user.* on a symlink.
                    self.warn(f"layer entry {ti.name!r}: not permitted to set xattr {name}")
                else:
                    raise

    def owner(self, ti: tarfile.TarInfo) -> tuple[int, int] | None:
        """The owner to give the entry's file, None to leave it ours."""
        if not self.same_owner:
            return None
        if self.id_ranges and not all(any(lo <= value < hi for lo, hi in ranges)
                                      for value, ranges in zip((ti.uid, ti.gid), self.id_ranges)):
            # An id the rootless namespace does not map (the kernel would refuse it): the
            # entry stays the building user's (root here), as unpacked without a namespace.
            self.warn(f"layer entry {ti.name!r} is owned by {ti.uid}:{ti.gid}, which the "
                      "rootless user namespace does not map: unpacked as 0:0 (subordinate ids "
                      "in /etc/subuid and /etc/subgid keep such owners)", once="unmapped")
            return None
        return ti.uid, ti.gid

    def chown(self, target: int | str, ti: tarfile.TarInfo) -> None:
        owner = self.owner(ti)
        if owner is None:
            return
        if isinstance(target, int):
            os.fchown(target, *owner)
        else:
            os.chown(target, *owner, follow_symlinks=False)

    def apply_owner_xattrs(self, rel: str, ti: tarfile.TarInfo) -> None:
        path = self.abs(rel)
        self.chown(path, ti)
        self.set_xattrs(path, ti, clear=True)

    def apply_meta(self, path: str, ti: tarfile.TarInfo, *, fd: int | None = None,
                   symlink: bool = False) -> None:
        target: int | str = fd if fd is not None else path
        # Owner first: chown clears setuid/setgid, chmod puts them back.
        self.chown(target, ti)
        if not symlink:
            os.chmod(target, ti.mode & 0o7777)
        self.set_xattrs(target, ti, clear=False)
        if fd is not None:
            os.utime(fd, ns=_times_ns(ti))
        else:
            os.utime(path, ns=_times_ns(ti), follow_symlinks=False)

    def finish(self) -> None:
        """Directory modes and times, deepest first, once nothing more is written in them."""
        self.files.close()
        todo = set(self.dir_meta) | set(self.saved_times)
        for rel in sorted(todo, key=lambda r: (-(r.count("/") + bool(r)), r)):
            # Skip what a later entry replaced (or moved behind a symlink).
            if rel and secure_join(self.root, rel) != rel:
                continue
            try:
                fd = os.open(self.abs(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except (FileNotFoundError, NotADirectoryError, OSError):
                continue
            try:
                ti = self.dir_meta.get(rel)
                if ti is not None:
                    os.chmod(fd, ti.mode & 0o7777)
                    os.utime(fd, ns=_times_ns(ti))
                else:
                    os.utime(fd, ns=self.saved_times[rel])
            finally:
                os.close(fd)


def unpack_layer(stream: BinaryIO, dest: Path, *, mode: UnpackMode = "snapshot",
                 same_owner: bool | None = None) -> UnpackResult:
    """Unpacks an uncompressed layer tar read forward from ``stream`` into ``dest`` (see
    the module doc for the two modes). Returns the diff_id and size of the whole stream."""
    unpacker = _Unpacker(Path(dest), mode, same_owner)
    reader = _HashingReader(stream)
    current = "<start>"
    try:
        tf = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
        while (ti := tf.next()) is not None:
            current = ti.name
            tf.members.clear()  # stream mode would keep every header otherwise
            unpacker.entry(tf, ti)
        unpacker.finish()
        reader.drain()
    except tarfile.TarError as e:
        raise LayerError(f"layer is not a valid tar (after entry {current!r}): {e}") from e
    except LayerError:
        raise
    except OSError as e:
        raise LayerError(f"cannot unpack layer entry {current!r}: {e}") from e
    finally:
        unpacker.files.abort()  # after a failure: no worker may still write once we return
    return UnpackResult(diff_id=reader.digest, size=reader.size,
                        warnings=tuple(unpacker.warnings))


def unpack_blob(path: Path, dest: Path, *, mode: UnpackMode = "snapshot",
                same_owner: bool | None = None) -> UnpackResult:
    """Unpacks a layer blob (gzip, zstd, bzip2, xz or plain tar, found by its magic),
    computing the diff_id of its uncompressed tar in the same pass."""
    with open(path, "rb") as f, open_decompressed(f) as tarstream:
        return unpack_layer(tarstream, dest, mode=mode, same_owner=same_owner)
