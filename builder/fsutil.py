"""Path helpers shared by every part that touches an image's files: resolving a path
inside a root the way the kernel would if that root were ``/``, and new temporary names.

Used by the layer unpacker (hostile tarballs), the executor (users, mount points) and
the builder's own file steps (WORKDIR, COPY --chown, RUN --mount sources).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

__all__ = ["MAX_SYMLINKS", "copy_fd", "make_temp_dir", "make_temp_file", "resolve_rel", "secure_join"]

MAX_SYMLINKS = 255


def _new_name(dir: str | os.PathLike[str], prefix: str, suffix: str, make: Callable[[str], T]) -> T:
    """``make(path)`` for the first random name in ``dir`` it does not find taken."""
    for _ in range(100):
        try:
            return make(os.path.join(dir, f"{prefix}{os.urandom(6).hex()}{suffix}"))
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(dir))


def make_temp_dir(dir: str | os.PathLike[str], prefix: str = "tmp") -> str:
    """A new folder (mode 0700) of a random name in ``dir``, as ``tempfile.mkdtemp`` makes
    it. The builder's every-build paths use this, since importing ``tempfile`` (and with it
    ``shutil``, ``random``, ``bz2``, ``lzma``) costs a small build more than its file work."""
    def make(name: str) -> str:
        os.mkdir(name, 0o700)
        return name

    return _new_name(dir, prefix, "", make)


def make_temp_file(dir: str | os.PathLike[str], prefix: str = "tmp", suffix: str = "") -> tuple[int, str]:
    """A new empty file (mode 0600) of a random name in ``dir``, open for reading and
    writing: (fd, path), as ``tempfile.mkstemp`` gives them."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    return _new_name(dir, prefix, suffix, lambda name: (os.open(name, flags, 0o600), name))


def resolve_rel(root: str | os.PathLike[str], unsafe: str) -> str:
    """``unsafe`` resolved under ``root``, returned relative to it ("" is the root itself).

    ``..`` stops at the root and absolute link targets restart from it, so the result
    never leaves the root; components that do not exist yet are kept as they are. The
    last component is resolved too when it is a link. Too many links raise ELOOP."""
    base = os.fspath(root)
    pending = [p for p in reversed(unsafe.replace("\\", "/").split("/")) if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(base, *resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links in {unsafe}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
    return "/".join(resolved)


def secure_join(root: str | os.PathLike[str], unsafe: str) -> Path:
    """``root`` joined with ``unsafe`` as ``resolve_rel`` resolves it."""
    rel = resolve_rel(root, unsafe)
    return Path(os.path.abspath(root), rel) if rel else Path(os.path.abspath(root))


# errnos that say "this way of copying does not work here", not "this file failed".
_UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP,
                          errno.EBADF, errno.ETXTBSY, errno.EPERM})
_methods = {"copy_file_range": hasattr(os, "copy_file_range"), "sendfile": hasattr(os, "sendfile")}


def copy_fd(sfd: int, dfd: int) -> None:
    """Copy a whole file between descriptors in the kernel: copy_file_range (which may
    share extents), else sendfile, else read/write in 1 MiB chunks, never whole in memory.
    A way the kernel refuses for the first file is not tried again in this process."""
    for name in ("copy_file_range", "sendfile"):
        if not _methods[name]:
            continue
        call = os.copy_file_range if name == "copy_file_range" else _sendfile
        done = 0
        try:
            while n := call(sfd, dfd, _KERNEL_CHUNK):
                done += n
            return
        except OSError as err:
            if err.errno not in _UNSUPPORTED or done:
                raise
            _methods[name] = False if err.errno in (errno.ENOSYS, errno.EXDEV) else _methods[name]
    while data := os.read(sfd, 1 << 20):
        view = memoryview(data)
        while view:
            view = view[os.write(dfd, view):]


_KERNEL_CHUNK = 1 << 30


def _sendfile(sfd: int, dfd: int, count: int) -> int:
    return os.sendfile(dfd, sfd, None, count)
