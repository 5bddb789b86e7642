"""The step's root filesystem: overlay mounts, paths inside a root, mount-point stubs.

Owns: the overlay option string (short symlinked paths, so hundreds of layers fit in one
page), ``mounted_rootfs`` for the builder's own COPY steps (with ``userxattr`` in a user
namespace), ``overlay_problem`` (can overlay be mounted here at all), ``enter_private_mount_namespace`` for the CLI, ``secure_join`` (resolve a path inside a root as if chrooted), and the stubs:
files and directories made only to mount on, recorded when made and removed from the
upper directory afterwards so that they leave no trace in the layer, as BuildKit does.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from builder.errors import ExecError
from builder.fsutil import make_temp_dir, secure_join

from . import libc
from .spec import RootFS
from .userns import in_user_namespace

__all__ = [
    "Stub",
    "secure_join",
    "overlay_options",
    "mount_overlay",
    "mounted_rootfs",
    "overlay_problem",
    "enter_private_mount_namespace",
    "make_stub",
    "remove_stubs",
]

OVERLAY_FAILED = "cannot mount the step's root filesystem"
# mount(2) copies its data argument into one page.
_MAX_OPTIONS = 4095


def overlay_options(rootfs: RootFS, linkdir: Path, *, relative: bool = False,
                    userxattr: bool = False) -> str:
    """Make short symlinks to the layers in ``linkdir`` and return overlay's option string.

    With ``relative`` the names are bare ("0:1:2"), for a caller whose cwd is ``linkdir``.
    """
    lowers = list(rootfs.lowers)
    # Overlay wants one lower at least, two when there is no upper (a read-only view).
    if len(lowers) < (1 if rootfs.upper is not None else 2):
        empty = linkdir / "e"
        empty.mkdir(mode=0o755)
        lowers.append(empty)
    links = {str(i): lower for i, lower in enumerate(lowers)}
    prefix = "" if relative else f"{linkdir}/"
    options = f"lowerdir={':'.join(prefix + name for name in links)}"
    if rootfs.upper is not None and rootfs.work is not None:
        links.update(u=rootfs.upper, w=rootfs.work)
        options += f",upperdir={prefix}u,workdir={prefix}w"
        if _volatile_supported():
            # A step's upper directory is read back into a layer by this same process and
            # never mounted again: the sync of the whole upper filesystem that overlay does
            # at unmount (50-100 ms a step here) buys nothing, so it is skipped.
            options += ",volatile"
    if userxattr:
        options += ",userxattr"
    if len(options) > _MAX_OPTIONS:
        raise ExecError(f"too many layers for one overlay mount ({len(lowers)})",
                        hint="squash some layers of the base image")
    for name, target in links.items():
        os.symlink(os.path.abspath(target), linkdir / name)
    return options


def _volatile_supported() -> bool:
    """overlay's `volatile` option exists since Linux 5.10."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 10)


def mount_overlay(target: Path, options: str) -> None:
    try:
        libc.mount("overlay", target, "overlay", 0, options)
    except OSError as e:
        if e.errno == errno.EPERM and os.geteuid() != 0:
            hint = ("without root, pybuild mounts in a user namespace of its own, entered "
                    "when a build starts and before any thread does (a caller of the Python "
                    "API that starts threads first must call "
                    "builder.executor.enter_user_namespace() before them), or build as root")
        else:
            hint = ("the upper and work directories must be on one filesystem that supports "
                    "overlayfs upper layers (not overlayfs itself)")
        raise ExecError(f"{OVERLAY_FAILED}: {e.strerror}", hint=hint) from e


@contextlib.contextmanager
def mounted_rootfs(rootfs: RootFS) -> Iterator[Path]:
    """Mount ``rootfs`` in this process' mount namespace; yield the merged directory."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="pb"))
    merged = tmp / "m"
    mounted = False
    try:
        merged.mkdir()
        mount_overlay(merged, overlay_options(rootfs, tmp, userxattr=in_user_namespace()))
        mounted = True
        yield merged
    finally:
        if mounted:
            try:
                libc.umount(merged)
            except OSError:
                # Busy (a file still open): detach now, the kernel finishes when it is closed.
                libc.umount(merged, libc.MNT_DETACH)
        shutil.rmtree(tmp, ignore_errors=True)


def overlay_problem(scratch: Path) -> str | None:
    """Why a step's overlay cannot be mounted with its upper directory in ``scratch`` (an
    old kernel, a filesystem that cannot be an upper layer, a user namespace that may not
    mount overlay), or None when it can: a small overlay is mounted there and removed."""
    import shutil

    probe = Path(make_temp_dir(scratch, "probe-"))
    try:
        for name in ("lower", "upper", "work", "m"):
            (probe / name).mkdir()
        rootfs = RootFS([probe / "lower"], probe / "upper", probe / "work")
        try:
            with mounted_rootfs(rootfs) as merged:
                (merged / "f").write_bytes(b"")  # an upper layer the kernel refuses fails here
        except (ExecError, OSError) as e:
            cause = e.__cause__ if isinstance(e, ExecError) else e
            if isinstance(cause, OSError) and cause.errno:
                return f"{os.strerror(cause.errno)} (errno {cause.errno})"
            return str(e)
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def enter_private_mount_namespace() -> None:
    """Give this process its own mount namespace with nothing propagating back to the host,
    so every mount the build makes dies with it. Call once, before any thread starts."""
    if threading.active_count() > 1:
        raise ExecError("enter_private_mount_namespace() must be called before threads start")
    try:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    except OSError as e:
        raise ExecError(f"cannot create a private mount namespace: {e.strerror}",
                        hint="pybuild needs root (or a user namespace) to run steps") from e


@dataclass(frozen=True, slots=True)
class Stub:
    """A mount point the executor made. ``path`` is relative to the root; ``whiteout`` says
    it replaced a whiteout in the upper dir (restored on removal); the parent's times before
    and its mtime right after creation let removal undo the parent's mtime change."""

    path: str
    is_dir: bool
    whiteout: bool
    parent_atime_ns: int
    parent_mtime_ns: int
    parent_mtime_after_ns: int
    # A directory of the lower layers that overlayfs copied up only because a stub was made
    # in it: removed again when it is still empty and as it was (mode, owner, mtime).
    copied_up: tuple[int, int, int, int] | None = None


def _is_whiteout(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_stub(root: Path, upper: Path | None, target: str, is_dir: bool) -> tuple[Path, list[Stub]]:
    """Resolve ``target`` inside ``root`` and create what is missing of it (parents as
    directories, the last component as a directory or empty file). Returns the real path and
    the stubs made, in creation order."""
    real = secure_join(root, target)
    rel_parts = real.relative_to(root).parts
    made: list[Stub] = []
    for depth in range(1, len(rel_parts) + 1):
        current = root.joinpath(*rel_parts[:depth])
        last = depth == len(rel_parts)
        if os.path.lexists(current):
            continue
        rel = "/".join(rel_parts[:depth])
        # Directories above that only the lower layers have get copied up by what we make.
        lower_only = []
        if upper is not None:
            for up in range(depth - 1, 0, -1):
                if os.path.lexists(upper.joinpath(*rel_parts[:up])):
                    break
                lower_only.append(up)
        befores = {up: os.stat(root.joinpath(*rel_parts[:up - 1])) for up in lower_only}
        selves = {up: os.stat(root.joinpath(*rel_parts[:up])) for up in lower_only}
        parent_st = os.stat(current.parent)
        whiteout = upper is not None and _is_whiteout(upper / rel)
        if is_dir or not last:
            current.mkdir(mode=0o755)
        else:
            fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            os.close(fd)
        for up in reversed(lower_only):  # outermost first, as removal goes newest first
            before, own = befores[up], selves[up]
            after_mtime = os.stat(root.joinpath(*rel_parts[:up - 1])).st_mtime_ns
            made.append(Stub("/".join(rel_parts[:up]), True, False, before.st_atime_ns,
                             before.st_mtime_ns, after_mtime,
                             (own.st_mode, own.st_uid, own.st_gid, own.st_mtime_ns)))
        after = os.stat(current.parent)
        made.append(Stub(rel, is_dir or not last, whiteout, parent_st.st_atime_ns,
                         parent_st.st_mtime_ns, after.st_mtime_ns))
    return real, made


def remove_stubs(upper: Path, stubs: Sequence[Stub],
                 owner: Callable[[os.stat_result], tuple[int, int]] | None = None) -> None:
    """Remove from ``upper`` the stubs still as they were made (empty), newest first, and
    put back their parents' times when nothing else touched the parent since. ``owner``
    translates a host stat's uid/gid to the ids the stubs were recorded with (a user
    namespace's view)."""
    for stub in reversed(stubs):
        path = upper / stub.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        parent = path.parent
        try:
            parent_mtime = os.stat(parent).st_mtime_ns
        except OSError:
            continue
        ids = owner(st) if owner is not None else (st.st_uid, st.st_gid)
        if stub.copied_up is not None and stub.copied_up != (st.st_mode, *ids, st.st_mtime_ns):
            continue  # the step changed the directory itself: that is part of the layer
        try:
            if stub.is_dir and stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            elif not stub.is_dir and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(path)
            else:
                continue
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue  # the step put something in it: it belongs to the layer now
            raise ExecError(f"cannot remove mount point {stub.path} from the layer: {e}") from e
        if stub.whiteout:
            with contextlib.suppress(OSError):
                os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        if parent_mtime == stub.parent_mtime_after_ns:
            with contextlib.suppress(OSError):
                os.utime(parent, ns=(stub.parent_atime_ns, stub.parent_mtime_ns))
