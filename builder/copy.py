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

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

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

__all__ = ["SourceSpec", "copy_into", "parse_chmod", "Chmod"]

_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")


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
) -> None:
    """Perform one COPY/ADD (see the module docstring). ``mtime`` (seconds) overrides every
    timestamp (SOURCE_DATE_EPOCH); ``unpack_archives`` defaults to ``is_add`` for local
    sources and to False for URLs (``ADD --unpack``)."""
    verb = "ADD" if is_add else "COPY"
    mode = parse_chmod(chmod) if not isinstance(chmod, Chmod) and chmod is not None else chmod
    drel, dir_hint = dest_path(dest, workdir)
    root = os.fspath(dest_root)
    copier = _Copier(root, chown=chown, chmod=mode, mtime=mtime, verb=verb)
    if len(sources) > 1 and not dir_hint and not copier.is_dir(drel):
        raise ContextError(
            f"When using {verb} with more than one source file, the destination must be a directory and end with a /"
        )
    try:
        with tempfile.TemporaryDirectory(prefix="pybuild-copy-", dir=scratch_dir) as tmp:
            for i, spec in enumerate(sources):
                if spec.kind == "path":
                    assert spec.tree is not None, "a path source needs its tree"
                    unpack = is_add if unpack_archives is None else unpack_archives
                    _copy_path(copier, spec.tree, spec.source, drel, dir_hint, parents, excludes, unpack)
                else:
                    scratch = Path(tmp, str(i))
                    scratch.mkdir()
                    _copy_special(copier, spec, scratch, drel, dir_hint, excludes, bool(unpack_archives))
            copier.finish()
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
) -> None:
    if parents:
        from builder.copy_parents import select_parents

        for match, sub in select_parents(tree, pattern):
            target = f"{drel}/{sub}" if drel else sub
            copier.ensure_dir(drel)
            copier.copy_parents_chain(tree, match, sub, drel)
            copier.copy_match(tree, match, target, dir_hint=match.is_dir, excludes=excludes)
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
                continue
        copier.copy_match(tree, match, drel, dir_hint=dir_hint, excludes=excludes)


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
    directories whose metadata is applied last (children change a directory's mtime)."""

    def __init__(
        self, root: str, *, chown: tuple[int, int] | None, chmod: Chmod | None, mtime: int | None, verb: str
    ) -> None:
        self.root = root
        self.chown = chown
        self.chmod = chmod
        self.mtime_ns = mtime * 1_000_000_000 if mtime is not None else None
        self.verb = verb
        self.is_root = os.geteuid() == 0
        self._pending_dirs: list[tuple[str, os.stat_result, SourceTree, str, bool]] = []
        self._inodes: dict[tuple[int, int], str] = {}
        self._created: list[str] = []  # parents made by ensure_dir, re-timed last (fsutil)

    # -- paths

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, rel: str) -> str:
        return resolve_in_root(self.root, rel)

    def is_dir(self, rel: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.host(self.resolve(rel))).st_mode)
        except OSError:
            return False

    def fail(self, message: str) -> ContextError:
        return ContextError(f"{self.verb} failed: {message}")

    def ensure_dir(self, rel: str) -> str:
        """MkdirAll inside the root: missing directories get the default mode (or the
        octal --chmod) and the --chown owner; returns the resolved path."""
        parts = [c for c in rel.split("/") if c]
        done = ""
        for comp in parts:
            done = self.resolve(f"{done}/{comp}" if done else comp)
            host = self.host(done)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                perm = self.chmod.octal if self.chmod is not None and self.chmod.octal is not None else 0o755
                os.mkdir(host, 0o700)
                os.chmod(host, perm)
                if self.chown is not None:
                    self._lchown(host, *self.chown)
                self._created.append(host)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise self.fail(f"mkdir /{done}: not a directory")
        return done

    # -- copying

    def copy_match(
        self, tree: SourceTree, match: SourceMatch, drel: str, *, dir_hint: bool, excludes: Sequence[str]
    ) -> None:
        """fsutil's Copy for one selected source into ``drel``."""
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
        for entry in tree.walk(match, excludes=excludes):
            target = dst if not entry.rel else (f"{dst}/{entry.rel}" if dst else entry.rel)
            self._copy_entry(tree, entry, target, overwrite_meta=bool(entry.rel))

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
        try:
            tst: os.stat_result | None = os.lstat(host)
        except FileNotFoundError:
            tst = None
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if tst is None:
                os.mkdir(host, 0o700)
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
                if first != host:
                    os.link(first, host)
                    return
            _copy_file_data(entry.path, host)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.path), host)
        elif stat.S_ISSOCK(mode) and tree.sockets_as_files:
            open(host, "wb").close()
        else:
            try:
                os.mknod(host, mode, st.st_rdev)
            except PermissionError:
                if self.is_root:
                    raise
                return  # devices need privileges; an unprivileged copy leaves them out
        self._apply_info(host, st, tree, entry.path)

    def _apply_info(self, host: str, st: os.stat_result, tree: SourceTree, src: str | None) -> None:
        if self.chown is not None:
            uid, gid = self.chown
        elif tree.owner is not None:
            uid, gid = tree.owner
        else:
            uid, gid = st.st_uid, st.st_gid
        self._lchown(host, uid, gid)
        is_link = stat.S_ISLNK(st.st_mode)
        if not is_link:
            perm = stat.S_IMODE(st.st_mode)
            if self.chmod is not None:
                perm = self.chmod.apply(perm, is_dir=stat.S_ISDIR(st.st_mode))
            os.chmod(host, perm)
        if src is not None:
            _copy_xattrs(src, host)
        self._set_times(host, st)

    def _set_times(self, host: str, st: os.stat_result) -> None:
        if self.mtime_ns is not None:
            times = (self.mtime_ns, self.mtime_ns)
        else:
            times = (st.st_atime_ns, st.st_mtime_ns)
        os.utime(host, ns=times, follow_symlinks=False)

    def _lchown(self, host: str, uid: int, gid: int) -> None:
        try:
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

    def finish(self) -> None:
        """Apply directory metadata, children before parents."""
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


def _copy_file_data(src: str, dst: str) -> None:
    """Copy bytes with the kernel's help (copy_file_range/sendfile), never whole in memory."""
    with open(src, "rb") as fsrc, open(dst, "xb") as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise
