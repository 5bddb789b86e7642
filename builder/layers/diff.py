"""Reads a snapshot (an overlayfs upper directory) as a stream of ``Change`` values.

A snapshot marks a deleted path with a character device 0:0 and a directory that hides
its lower content with the xattr ``trusted.overlay.opaque=y`` (``user.overlay.opaque=y``
when made in a user namespace). Where neither could be made (an unprivileged unpack on a
kernel older than 5.8, a file system without xattrs) unpack.py falls back to the layer tar
spelling: an empty regular file ``.wh.NAME`` or ``.wh..wh..opq``. Both spellings are read
here; a name starting with ``.wh.`` cannot be carried by an OCI layer anyway.

Order (deterministic, parents before children): a depth-first walk; in each directory the
opaque marker comes first, then the whiteouts, then the entries, each group sorted by the
bytes of the name, and a directory's subtree follows the directory itself.

Overlay's own bookkeeping xattrs (``*.overlay.*``) and ``security.selinux`` (a property of
the host, not of the image) are not part of a change. A snapshot made with
``redirect_dir`` or ``metacopy`` cannot be expressed as a layer and is refused.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterator

from builder.errors import LayerError
from builder.layers.types import Change, log_warning

__all__ = [
    "Walker",
    "changes",
    "merged_lookup",
    "walk_tree",
    "read_xattrs",
    "is_overlay_xattr",
    "OPAQUE_XATTRS",
    "WHITEOUT_PREFIX",
    "OPAQUE_MARKER",
]


WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")
_UNREPRESENTABLE = ("redirect", "metacopy")
_HOST_XATTRS = frozenset({"security.selinux"})


def is_overlay_xattr(name: str) -> bool:
    return name.startswith(_OVERLAY_PREFIXES)


def read_xattrs(path: str, *, overlay: bool = False) -> dict[str, bytes]:
    """All xattrs of ``path`` (not following a symlink); overlay's own only if ``overlay``."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        if name in _HOST_XATTRS or (is_overlay_xattr(name) and not overlay):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.ENODATA:  # removed meanwhile
                raise
    return out


def _is_opaque(xattrs: dict[str, bytes]) -> bool:
    return any(xattrs.get(name) == b"y" for name in OPAQUE_XATTRS)


def _check_representable(rel: str, xattrs: dict[str, bytes]) -> None:
    for name in xattrs:
        if is_overlay_xattr(name) and name.rsplit(".", 1)[-1] in _UNREPRESENTABLE:
            raise LayerError(
                f"snapshot entry {rel!r} carries {name}: the overlay was mounted with "
                "redirect_dir or metacopy, whose changes cannot be written as a layer",
                hint="mount the step's overlay with redirect_dir=off,metacopy=off",
            )


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class Walker:
    """Reads entries as ``Change`` values, remembering (dev, inode) so that the second path
    of a hard link comes out as a link to the first. ``overlay`` reads whiteout spellings."""

    def __init__(self, root: Path, *, overlay: bool) -> None:
        self.root = root
        self.overlay = overlay
        self.links: dict[tuple[int, int], str] = {}

    def entry(self, rel: str, full: str, st: os.stat_result,
              xattrs: dict[str, bytes]) -> Change:
        mode = st.st_mode
        link_target = None
        hardlink_to = None
        devmajor = devminor = 0
        size = 0
        if stat.S_ISLNK(mode):
            link_target = os.readlink(full)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISREG(mode):
            size = st.st_size
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            hardlink_to = self.links.get(key)
            if hardlink_to is None:
                self.links[key] = rel
            else:
                size = 0
        return Change(
            path=rel, kind="entry", mode=mode, uid=st.st_uid, gid=st.st_gid, size=size,
            mtime_ns=st.st_mtime_ns, devmajor=devmajor, devminor=devminor,
            link_target=link_target,
            xattrs=tuple(sorted((k, v) for k, v in xattrs.items() if not is_overlay_xattr(k))),
            hardlink_to=hardlink_to, source=Path(full),
        )

    def children(self, rel: str, full: str, *, opaque: bool = False) -> Iterator[Change]:
        with os.scandir(full) as it:
            names = sorted((e.name for e in it), key=os.fsencode)
        whiteouts: list[str] = []
        entries: list[tuple[str, os.stat_result]] = []
        for name in names:
            child = os.path.join(full, name)
            st = os.lstat(child)
            if self.overlay:
                if _is_whiteout_device(st):
                    whiteouts.append(name)
                    continue
                if name.startswith(WHITEOUT_PREFIX) and stat.S_ISREG(st.st_mode):
                    if name == OPAQUE_MARKER:
                        opaque = True
                    elif name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                        log_warning(__name__, "ignoring overlay metadata file %s",
                                    _join(rel, name))
                    else:
                        whiteouts.append(name[len(WHITEOUT_PREFIX):])
                    continue
            if stat.S_ISSOCK(st.st_mode):
                # A tar cannot carry a socket; docker and buildkit drop them too.
                log_warning(__name__, "skipping socket %s", _join(rel, name))
                continue
            entries.append((name, st))
        if opaque:
            yield Change(path=rel, kind="opaque")
        for name in sorted(set(whiteouts), key=os.fsencode):
            yield Change(path=_join(rel, name), kind="whiteout")
        for name, st in entries:
            yield from self.node(_join(rel, name), os.path.join(full, name), st)

    def node(self, rel: str, full: str, st: os.stat_result) -> Iterator[Change]:
        xattrs = read_xattrs(full, overlay=self.overlay)
        if self.overlay:
            _check_representable(rel, xattrs)
        yield self.entry(rel, full, st, xattrs)
        if stat.S_ISDIR(st.st_mode):
            yield from self.children(rel, full, opaque=self.overlay and _is_opaque(xattrs))


def changes(upper: Path) -> Iterator[Change]:
    """The changes a snapshot directory holds, in the order described in the module doc.

    The root itself yields nothing (its metadata is not part of a layer) unless it is
    opaque, which yields ``Change("", "opaque")`` first.
    """
    root = os.fspath(upper)
    walker = Walker(Path(root), overlay=True)
    xattrs = read_xattrs(root, overlay=True)
    _check_representable("", xattrs)
    yield from walker.children("", root, opaque=_is_opaque(xattrs))


def walk_tree(root: Path) -> Iterator[Change]:
    """Every entry below a plain (flattened) tree, in the same order, whiteout spellings
    taken literally. Used for ``-o type=tar``."""
    walker = Walker(root, overlay=False)
    yield from walker.children("", os.fspath(root))


def _hidden_below(layer: str, parts: list[str]) -> bool:
    """Whether ``layer`` hides ``parts`` from the layers under it with a ``.wh.NAME`` file
    (the whiteout device spelling is met by the caller's own lstat)."""
    parent = os.path.join(layer, *parts[:-1])
    return os.path.lexists(os.path.join(parent, WHITEOUT_PREFIX + parts[-1]))


def _opaque_dir(path: str) -> bool:
    return (_is_opaque(read_xattrs(path, overlay=True))
            or os.path.lexists(os.path.join(path, OPAQUE_MARKER)))


def merged_lookup(lowers: list[Path], rel: str) -> list[tuple[str, os.stat_result, str]] | None:
    """What the overlay of ``lowers`` (top first) shows along ``rel``, without mounting it:
    for each component that exists, (its relative path, its lstat, the layer path that
    shows it), stopping at the first one missing. None when a component other than the
    last is not a directory (a symlink or a file in the way: only a real lookup can say)."""
    parts = [p for p in rel.split("/") if p]
    layers = [os.fspath(p) for p in lowers]
    found: list[tuple[str, os.stat_result, str]] = []
    for depth in range(1, len(parts) + 1):
        prefix = parts[:depth]
        shown: tuple[str, os.stat_result, str] | None = None
        below: list[str] = []
        for layer in layers:
            path = os.path.join(layer, *prefix)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                if _hidden_below(layer, prefix):
                    break
                continue
            if _is_whiteout_device(st):
                break
            if shown is None:
                shown = ("/".join(prefix), st, path)
            if not stat.S_ISDIR(st.st_mode):
                break
            below.append(layer)
            if _opaque_dir(path):
                break
        if shown is None:
            return found
        if depth < len(parts) and not stat.S_ISDIR(shown[1].st_mode):
            return None
        found.append(shown)
        layers = below
    return found
