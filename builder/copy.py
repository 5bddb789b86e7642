"""COPY and ADD onto a root filesystem directory, with BuildKit's file-operation semantics.

``copy_into`` writes the sources of one COPY/ADD instruction into ``dest_root`` (a merged
rootfs, or an empty directory for ``--link``). What it does, per selected source (see
tonistiigi/fsutil ``copy.Copy`` with ``CopyDirContents`` and ``FollowLinks``):

* the destination is relative to WORKDIR; a trailing ``/`` (or ``.``) makes it a
  directory, created with its missing parents (mode 0755, or the --chmod mode; owned by
  the --chown owner, else by the builder's user); symlinks in it resolve inside dest_root;
* a file goes *into* an existing directory, else becomes the destination; a directory's
  *contents* are merged into the destination (created as above when missing, its
  timestamps then taken from the source directory);
* below the source, files, links (as links), empty directories, fifos and devices are
  copied with modes and mtimes; hard links inside one source stay hard links; owners are
  the --chown owner, else the tree's owner (0:0 for the build context), else the
  source's; xattrs are copied where the kernel allows;
* --chmod sets the mode of everything copied, directories included (octal or symbolic);
* ``--parents`` keeps the path below the ``/./`` pivot (or the whole path);
* ``ADD`` of a local tar archive (by content) extracts it (``builder.copy_add``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from builder.context import (
    DirTree,
    SourceMatch,
    SourceTree,
    TreeEntry,
    clean_source,
    resolve_in_root,
)
from builder.copy_mode import Chmod, parse_chmod
from builder.errors import ContextError
from builder.fsutil import copy_fd

__all__ = ["SourceSpec", "copy_into", "parse_chmod", "Chmod"]

_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")
Observer = Callable[[str, TreeEntry], None]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One source of a COPY/ADD, already expanded: a path in a tree, a URL, a git
    repository, or an inline (heredoc) file."""

    kind: Literal["path", "url", "git", "inline"]
    source: str  # the path or pattern, URL, git URL, or the inline file's name
    tree: SourceTree | None = None
    data: bytes = b""
    checksum: str | None = None  # ADD --checksum for url/git
    keep_git_dir: bool = False

    @classmethod
    def path(cls, tree: SourceTree, pattern: str) -> SourceSpec:
        return cls("path", pattern, tree=tree)

    @classmethod
    def inline(cls, name: str, data: bytes) -> SourceSpec:
        return cls("inline", name, data=data)

    @classmethod
    def url(cls, url: str, *, checksum: str | None = None) -> SourceSpec:
        return cls("url", url, checksum=checksum)

    @classmethod
    def git(cls, url: str, *, keep_git_dir: bool = False, checksum: str | None = None) -> SourceSpec:
        return cls("git", url, keep_git_dir=keep_git_dir, checksum=checksum)


def copy_into(
    dest_root: Path,
    sources: Sequence[SourceSpec],
    dest: str,
    *,
    workdir: str = "/",
    chown: tuple[int, int] | None = None,
    chmod: int | str | Chmod | None = None,
    parents: bool = False,
    excludes: Sequence[str] = (),
    is_add: bool = False,
    unpack_archives: bool | None = None,
    mtime: int | None = None,
    scratch_dir: Path | None = None,
    observe: Observer | None = None,
    donor: Path | None = None,
) -> None:
    """Perform one COPY/ADD (see the module docstring). ``donor``: a snapshot an earlier
    run of the same step left (its destination root then): a file that would come out
    the same as the donor's at that path, byte for byte and in every recorded attribute,
    is hard-linked from it instead of written again. ``mtime`` (seconds) overrides every
    timestamp (SOURCE_DATE_EPOCH); ``unpack_archives`` defaults to ``is_add`` for local
    sources and to False for URLs (``ADD --unpack``). ``observe(match.rel, entry)`` is
    called for each entry of a path source as it is copied (an archive: its own entry),
    so a caller can list what was copied without walking the tree again."""
    verb = "ADD" if is_add else "COPY"
    mode = parse_chmod(chmod) if not isinstance(chmod, Chmod) and chmod is not None else chmod
    drel, dir_hint = dest_path(dest, workdir)
    root = os.fspath(dest_root)
    # Several sources and a destination without a trailing /: BuildKit copies them one
    # after the other to the same path (no error, unlike docker's classic builder).
    copier = _Copier(root, chown=chown, chmod=mode, mtime=mtime, verb=verb,
                     donor=os.fspath(donor) if donor is not None else None)
    try:
        with contextlib.ExitStack() as scratches:
            tmp = None  # made for the first source that is not a path: most copies need none
            try:
                for i, spec in enumerate(sources):
                    if spec.kind == "path":
                        assert spec.tree is not None, "a path source needs its tree"
                        unpack = is_add if unpack_archives is None else unpack_archives
                        _copy_path(copier, spec.tree, spec.source, drel, dir_hint, parents, excludes, unpack,
                                   observe)
                    else:
                        if tmp is None:
                            import tempfile

                            tmp = scratches.enter_context(
                                tempfile.TemporaryDirectory(prefix="pybuild-copy-", dir=scratch_dir))
                        scratch = Path(tmp, str(i))
                        scratch.mkdir()
                        _copy_special(copier, spec, scratch, drel, dir_hint, excludes, bool(unpack_archives))
                copier.finish()
            finally:
                copier.close()  # no copy thread may outlive the scratch files it reads
    except OSError as err:
        where = err.filename or ""
        if isinstance(where, str) and where.startswith(root):
            where = where[len(root):] or "/"
        raise ContextError(f"{verb} failed: {err.strerror or err}: {where}".rstrip(": ")) from None


def dest_path(dest: str, workdir: str) -> tuple[str, bool]:
    """The destination relative to the rootfs, and whether it names a directory."""
    if dest in ("", "."):
        dest = "./"
    dir_hint = dest.endswith("/") or dest.endswith("/.") or dest in (".", "..") or dest.endswith("/..")
    full = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
    return clean_source(full), dir_hint


def _copy_path(
    copier: _Copier,
    tree: SourceTree,
    pattern: str,
    drel: str,
    dir_hint: bool,
    parents: bool,
    excludes: Sequence[str],
    unpack: bool,
    observe: Observer | None = None,
) -> None:
    if parents:
        from builder.copy_parents import select_parents

        for match, sub in select_parents(tree, pattern):
            target = f"{drel}/{sub}" if drel else sub
            copier.ensure_dir(drel)
            copier.copy_parents_chain(tree, match, sub, drel)
            copier.copy_match(tree, match, target, dir_hint=match.is_dir, excludes=excludes, observe=observe)
        return
    try:
        matches = tree.select(pattern, excludes=excludes)
    except ContextError as err:
        if copier.verb != "COPY" and err.message.startswith("COPY failed:"):
            raise ContextError("ADD" + err.message[4:], hint=err.hint) from None
        raise
    for match in matches:
        if unpack and not match.is_dir:
            from builder.copy_add import extract_if_archive

            host = os.path.join(os.fspath(tree.root), match.resolved)
            if extract_if_archive(host, copier, drel):
                if observe is not None:
                    observe(match.rel, TreeEntry("", host, os.lstat(host)))
                continue
        copier.copy_match(tree, match, drel, dir_hint=dir_hint, excludes=excludes, observe=observe)


def _copy_special(
    copier: _Copier,
    spec: SourceSpec,
    scratch: Path,
    drel: str,
    dir_hint: bool,
    excludes: Sequence[str],
    unpack: bool,
) -> None:
    from builder import copy_add

    if spec.kind == "inline":
        name = clean_source(spec.source) or "__unnamed__"
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(spec.data)
        os.chmod(path, 0o644)
        tree = DirTree(scratch, label="inline file", owner=(0, 0))
        copier.copy_match(tree, SourceMatch(name, name, False), drel, dir_hint=dir_hint, excludes=excludes)
    elif spec.kind == "url":
        name = copy_add.fetch_url(spec.source, scratch, checksum=spec.checksum)
        if unpack and copy_add.extract_if_archive(os.fspath(scratch / name), copier, drel):
            return
        tree = DirTree(scratch, label=spec.source, owner=(0, 0))
        copier.copy_match(tree, SourceMatch(name, name, False), drel, dir_hint=dir_hint, excludes=excludes)
    elif spec.kind == "git":
        sub = copy_add.git_checkout(spec.source, scratch, keep_git_dir=spec.keep_git_dir, checksum=spec.checksum)
        tree = DirTree(scratch, label=spec.source, owner=(0, 0))
        copier.copy_match(tree, SourceMatch(sub, sub, True), drel, dir_hint=True, excludes=excludes)
    else:  # pragma: no cover - the dataclass admits only these kinds
        raise ValueError(spec.kind)


class _Copier:
    """Writes entries under one destination root; remembers hard links and the
    directories whose metadata is applied last (children change a directory's mtime).

    Regular files below a directory source are written by a small thread pool (the
    syscalls release the GIL, so the walk goes on meanwhile); everything that depends on
    order (directories, hard links, overwrites, other sources) stays on the caller's
    thread, and the pool is drained before anything that could see a file in flight."""

    def __init__(
        self, root: str, *, chown: tuple[int, int] | None, chmod: Chmod | None, mtime: int | None, verb: str,
        donor: str | None = None,
    ) -> None:
        self.root = root
        self.donor = donor
        self._donated: set[int] = set()  # inodes linked here from snapshots: each at most once
        try:  # a snapshot's file can be linked only within one filesystem
            self.root_dev: int | None = os.stat(root).st_dev
        except OSError:
            self.root_dev = None
        self.chown = chown
        self.chmod = chmod
        self.mtime_ns = mtime * 1_000_000_000 if mtime is not None else None
        self.verb = verb
        self.is_root = os.geteuid() == 0
        self._pending_dirs: list[tuple[str, os.stat_result, SourceTree, str, bool]] = []
        self._inodes: dict[tuple[int, int], str] = {}
        self._created: list[str] = []  # parents made by ensure_dir, re-timed last (fsutil)
        # Directories this walk made: nothing can be in them but what the walk wrote, so
        # their children need no lstat (on an overlay, a miss searches every lower); with
        # the group a file created in them gets, so a chown that would change nothing is
        # skipped (on ext4 each one is another journaled inode update).
        self._fresh: dict[str, int] = {}
        self._ids = (os.geteuid(), os.getegid())
        self._pool: _FilePool | None = None

    # -- paths

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, rel: str) -> str:
        return resolve_in_root(self.root, rel)

    def fail(self, message: str) -> ContextError:
        return ContextError(f"{self.verb} failed: {message}")

    def ensure_dir(self, rel: str, *, perm: int | None = None) -> str:
        """MkdirAll inside the root: missing directories get ``perm``, else the default
        mode (or the octal --chmod), and the --chown owner; returns the resolved path."""
        parts = [c for c in rel.split("/") if c]
        done = ""
        for comp in parts:
            done = self.resolve(f"{done}/{comp}" if done else comp)
            host = self.host(done)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                mode = perm if perm is not None else (
                    self.chmod.octal if self.chmod is not None and self.chmod.octal is not None else 0o755)
                os.mkdir(host, 0o700)
                os.chmod(host, mode)
                if self.chown is not None:
                    self._lchown(host, *self.chown)
                self._created.append(host)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise self.fail(f"mkdir /{done}: not a directory")
        return done

    # -- copying

    def copy_match(
        self, tree: SourceTree, match: SourceMatch, drel: str, *, dir_hint: bool, excludes: Sequence[str],
        observe: Observer | None = None,
    ) -> None:
        """fsutil's Copy for one selected source into ``drel``. Hard links are kept within
        it only: BuildKit makes one copy per source (and per match of a wildcard), each with
        its own record of inodes, so two sources that are links of one file come out as
        two files."""
        self._inodes.clear()
        ensure = drel if dir_hint else drel.rpartition("/")[0]
        self.ensure_dir(ensure)
        dst = self.resolve(drel)
        try:
            dst_st: os.stat_result | None = os.stat(self.host(dst))
        except (FileNotFoundError, NotADirectoryError):
            dst_st = None
        if not match.is_dir and dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
            name = match.rel.rpartition("/")[2]
            dst = f"{dst}/{name}" if dst else name
        if match.is_dir and dst_st is None:
            self.ensure_dir(dst)
        else:
            self.ensure_dir(dst.rpartition("/")[0])
        if match.is_dir and self._pool is None:
            self._pool = _FilePool(_WORKERS)
        self._fresh.clear()
        try:
            for entry in tree.walk(match, excludes=excludes):
                target = dst if not entry.rel else (f"{dst}/{entry.rel}" if dst else entry.rel)
                self._copy_entry(tree, entry, target, overwrite_meta=bool(entry.rel))
                if observe is not None:
                    observe(match.rel, entry)
        finally:
            self._fresh.clear()
        # The next source may write the same paths: every file of this one is in place first.
        self.drain()

    def copy_parents_chain(self, tree: SourceTree, match: SourceMatch, sub: str, drel: str) -> None:
        """--parents: directories between the pivot and a match are created with the
        metadata of their source directories."""
        src_parts = match.resolved.split("/")
        sub_parts = sub.split("/")
        base = src_parts[: len(src_parts) - len(sub_parts)]
        for i in range(1, len(sub_parts)):
            src_rel = "/".join(base + sub_parts[:i])
            target = "/".join(([drel] if drel else []) + sub_parts[:i])
            host = self.host(target)
            if os.path.lexists(host):
                continue
            src_host = os.path.join(os.fspath(tree.root), src_rel)
            st = os.lstat(src_host)
            os.mkdir(host, 0o700)
            self._pending_dirs.append((host, st, tree, src_host, True))

    def _copy_entry(self, tree: SourceTree, entry: TreeEntry, target: str, *, overwrite_meta: bool) -> None:
        st = entry.st
        host = self.host(target)
        tst: os.stat_result | None = None
        fresh_gid = self._fresh.get(host.rpartition("/")[0])
        if fresh_gid is None:
            try:
                tst = os.lstat(host)
            except FileNotFoundError:
                pass
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if tst is None:
                os.mkdir(host, 0o700)
                made = os.lstat(host)  # in a setgid directory it is setgid too
                self._fresh[host] = made.st_gid if made.st_mode & stat.S_ISGID else self._ids[1]
                self._pending_dirs.append((host, st, tree, entry.path, True))
            elif not stat.S_ISDIR(tst.st_mode):
                raise self.fail(f"cannot copy to non-directory: /{target}")
            else:
                # An existing directory keeps its owner unless it is below the source's top.
                self._pending_dirs.append((host, st, tree, entry.path, overwrite_meta))
            return
        if tst is not None:
            if stat.S_ISDIR(tst.st_mode):
                raise self.fail(f"cannot replace to directory /{target} with file")
            os.unlink(host)
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                first = self._inodes.setdefault((st.st_dev, st.st_ino), host)
                if first != host:  # the first link was written on this thread
                    os.link(first, host)
                    return
            uid, gid, perm, times = self._meta(st, tree)
            owner = None if (uid, fresh_gid) == (self._ids[0], gid) else (uid, gid)
            if st.st_nlink == 1 and st.st_size >= LINK_SOURCE_MIN and \
                    self._link_from_snapshot(tree, entry.path, host, perm, times, st, uid, gid):
                return
            if self._pool is not None and st.st_nlink == 1:
                # Linking from the donor is a few short syscalls: done here, in order, it
                # costs less than handing it to the pool's threads, which fight for the GIL.
                if self.donor is None or not self._link_from_donor(entry.path, host, perm, times, st, uid, gid):
                    self._pool.submit(self._write_file, entry.path, host, owner, perm, times)
            else:
                self._write_file(entry.path, host, owner, perm, times)
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.path), host)
        elif stat.S_ISSOCK(mode) and tree.sockets_as_files:
            os.close(os.open(host, _DST_FLAGS, 0o600))
        else:
            try:
                os.mknod(host, mode, st.st_rdev)
            except PermissionError:
                if self.is_root:
                    raise
                return  # devices need privileges; an unprivileged copy leaves them out
        self._apply_info(host, st, tree, entry.path)

    def _write_file(self, src: str, dst: str, owner: tuple[int, int] | None, perm: int | None,
                    times: tuple[int, int]) -> None:
        """A regular file's bytes, then owner (None: it is created with the right one),
        mode, xattrs and times (the order of ``_apply_info``: a chown clears setuid bits, a
        write moves the mtime), all through descriptors so each path is looked up once."""
        sfd = os.open(src, _SRC_FLAGS)
        try:
            dfd = os.open(dst, _DST_FLAGS, 0o600)
            try:
                try:
                    copy_fd(sfd, dfd)
                    if owner is not None:
                        self._lchown(dfd, *owner)
                    if perm is not None:
                        os.chmod(dfd, perm)
                    _copy_xattrs(sfd, dfd)
                    os.utime(dfd, ns=times)
                except OSError as err:
                    if err.filename is None:  # a descriptor's error: name the file for the message
                        err.filename = dst
                    raise
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _link_from_snapshot(self, tree: SourceTree, src: str, dst: str, perm: int | None,
                            times: tuple[int, int], st: os.stat_result, uid: int, gid: int) -> bool:
        """Hard-link ``dst`` to the very file a stage or image source shows at ``src``, in
        the finished snapshot it comes from, when the copy would keep everything of it:
        owner, permissions and mtime unchanged, no xattrs, and no other path of this copy
        linked to it. The overlay shows that file itself (the same inode number, size and
        mtime are checked), so no byte needs comparing; neither snapshot is ever written."""
        layers = getattr(tree, "snapshots", ())
        if not layers or self.root_dev is None:
            return False
        from builder.layers.diff import merged_lookup

        rel = os.path.relpath(src, os.fspath(tree.root))
        found = merged_lookup(list(layers), rel)
        if not found or found[-1][0] != "/".join(p for p in rel.split("/") if p):
            return False
        _, have, there = found[-1]
        if have.st_ino != st.st_ino or have.st_dev != self.root_dev:
            return False
        return self._link_if_kept(there, have, dst, perm, times, st, uid, gid, compare=None)

    def _link_from_donor(self, src: str, dst: str, perm: int | None, times: tuple[int, int],
                         st: os.stat_result, uid: int, gid: int) -> bool:
        """Hard-link ``dst`` to the donor's file at the same path when that file is what
        writing ``src`` would make: a regular file of the same size, owner, permissions and
        mtime, no xattrs on either side, the same bytes, and no other path of this copy
        linked to it (a layer's hard links are only those of the source). The donor is a
        finished snapshot, never written again, so sharing its inode changes nothing."""
        assert self.donor is not None
        rel = os.path.relpath(dst, self.root)
        there = os.path.join(self.donor, rel)
        try:
            have = os.lstat(there)
        except OSError:
            return False
        return self._link_if_kept(there, have, dst, perm, times, st, uid, gid, compare=src)

    def _link_if_kept(self, there: str, have: os.stat_result, dst: str, perm: int | None,
                      times: tuple[int, int], st: os.stat_result, uid: int, gid: int,
                      compare: str | None) -> bool:
        """Link ``dst`` to the finished snapshot's file ``there`` (lstat ``have``) if it is
        what the copy would write: a regular file of the copy's size, owner, permission bits
        and mtime, without xattrs, not yet linked by this copy, and, given ``compare``, with
        that file's bytes and no xattrs on it either."""
        if not (stat.S_ISREG(have.st_mode) and have.st_size == st.st_size
                and (have.st_uid, have.st_gid) == (uid, gid)
                and stat.S_IMODE(have.st_mode) == perm and have.st_mtime_ns == times[1]
                and have.st_ino not in self._donated):
            return False
        try:
            if os.listxattr(there, follow_symlinks=False):
                return False
            if compare is not None and (os.listxattr(compare, follow_symlinks=False)
                                        or not _same_bytes(compare, there)):
                return False
            self._donated.add(have.st_ino)
            os.link(there, dst, follow_symlinks=False)
        except OSError:  # EMLINK, EXDEV, EPERM (protected_hardlinks), a file that went away
            return False
        return True

    def _meta(self, st: os.stat_result, tree: SourceTree) -> tuple[int, int, int | None, tuple[int, int]]:
        """(uid, gid, permission bits or None for a link, (atime, mtime) in ns) of a copy."""
        if self.chown is not None:
            uid, gid = self.chown
        elif tree.owner is not None:
            uid, gid = tree.owner
        else:
            uid, gid = st.st_uid, st.st_gid
        perm: int | None = None
        if not stat.S_ISLNK(st.st_mode):
            perm = stat.S_IMODE(st.st_mode)
            if self.chmod is not None:
                perm = self.chmod.apply(perm, is_dir=stat.S_ISDIR(st.st_mode))
        if self.mtime_ns is not None:
            times = (self.mtime_ns, self.mtime_ns)
        else:
            times = (st.st_atime_ns, st.st_mtime_ns)
        return uid, gid, perm, times

    def _apply_info(self, host: str, st: os.stat_result, tree: SourceTree, src: str | None) -> None:
        uid, gid, perm, times = self._meta(st, tree)
        self._lchown(host, uid, gid)
        if perm is not None:
            os.chmod(host, perm)
        if src is not None:
            _copy_xattrs(src, host)
        os.utime(host, ns=times, follow_symlinks=False)

    def _set_times(self, host: str, st: os.stat_result) -> None:
        if self.mtime_ns is not None:
            times = (self.mtime_ns, self.mtime_ns)
        else:
            times = (st.st_atime_ns, st.st_mtime_ns)
        os.utime(host, ns=times, follow_symlinks=False)

    def _lchown(self, host: str | int, uid: int, gid: int) -> None:
        try:
            if isinstance(host, int):
                os.chown(host, uid, gid)
            else:
                os.lchown(host, uid, gid)
        except PermissionError:
            if self.is_root:
                raise
            # Unprivileged (unit tests): ownership cannot be given away; the rest still holds.
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            # In a rootless build's user namespace an id outside its map is EINVAL.
            raise ContextError(
                f"{self.verb} --chown: cannot give files to {uid}:{gid}: the rootless user "
                "namespace does not map that id",
                hint="give your user a range in /etc/subuid and /etc/subgid, or build as root") from None

    def drain(self) -> None:
        """Wait for the files in flight; raise the first error one of them met."""
        if self._pool is not None:
            self._pool.drain()

    def finish(self) -> None:
        """Apply directory metadata, children before parents, once every file is written."""
        self.drain()
        for host, st, tree, src, full in reversed(self._pending_dirs):
            if full:
                self._apply_info(host, st, tree, src)
            else:
                self._set_times(host, st)
        self._pending_dirs.clear()
        if self.mtime_ns is not None:
            for host in reversed(self._created):
                os.utime(host, ns=(self.mtime_ns, self.mtime_ns), follow_symlinks=False)
        self._created.clear()

    def close(self) -> None:
        """Stop the pool's threads (after their files); errors are drain's to raise."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


# Threads copying files: the kernel work of creating files on an overlay overlaps the
# walk (20,000 small files: 3.0 -> 2.0 s with 4 threads on 2 cores, tmpfs upper).
_WORKERS = 4
# From this size a file of a stage or image source is hard-linked from its snapshot when
# it may be (see _Copier._link_from_snapshot): below it, the lookup costs about what
# writing the bytes does.
LINK_SOURCE_MIN = 64 * 1024


def _same_bytes(a: str, b: str, chunk: int = 1 << 20) -> bool:
    """Whether two regular files hold the same bytes (read side by side)."""
    fa = os.open(a, _SRC_FLAGS)
    try:
        fb = os.open(b, _SRC_FLAGS)
        try:
            while True:
                x, y = os.read(fa, chunk), os.read(fb, chunk)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)


_SRC_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_DST_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


class _FilePool:
    """A few threads writing files, at most ``limit`` queued at once, so memory stays
    flat however many files a context holds; the first error is kept for ``drain``.
    Plain threads on a SimpleQueue: a Future per file would cost more than its copy."""

    def __init__(self, workers: int, limit: int = 256) -> None:
        import queue  # only a copy of a folder makes a pool: most single-file copies do not

        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]] | None] = \
            queue.SimpleQueue()
        self._limit = limit
        self._cond = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, name=f"pybuild-copy-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        with self._cond:
            while self._pending >= self._limit:
                self._cond.wait()
            if self._error is not None:
                self._raise()
            self._pending += 1
        self._queue.put((fn, args))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by drain
                with self._cond:
                    if self._error is None:
                        self._error = exc
            finally:
                with self._cond:
                    self._pending -= 1
                    if self._pending in (0, self._limit - 1):  # drain, or a full queue, waits
                        self._cond.notify_all()

    def drain(self) -> None:
        with self._cond:
            while self._pending:
                self._cond.wait()
            if self._error is not None:
                self._raise()

    def _raise(self) -> None:
        err, self._error = self._error, None
        assert err is not None
        raise err

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


def _copy_xattrs(src: str | int, dst: str | int) -> None:
    """Extended attributes, by path (links not followed) or by descriptor."""
    follow = not isinstance(src, str)
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=follow), follow_symlinks=follow)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise
