"""The few Linux system calls Python 3.11's ``os`` lacks, through ctypes.

Owns: unshare, mount, umount2, pivot_root, sethostname, prctl, capset, syncfs and the
flag constants they take. Every failure raises ``OSError`` carrying errno and a
message naming the call and its arguments, so callers can word a clear error.
Standard library only: this runs in the forked child between fork and exec.
"""
from __future__ import annotations

import ctypes
import os

__all__ = [
    "CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER", "CLONE_NEWPID",
    "CLONE_NEWNET", "MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_REMOUNT",
    "MS_BIND", "MS_REC", "MS_PRIVATE", "MS_STRICTATIME", "MNT_DETACH",
    "unshare", "mount", "umount", "pivot_root", "sethostname", "prctl", "capset",
    "PR_SET_PDEATHSIG", "PR_CAPBSET_DROP", "PR_CAP_AMBIENT", "PR_CAP_AMBIENT_CLEAR_ALL",
    "last_cap", "syncfs",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# pivot_root has no glibc wrapper; its number differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "ppc64le": 203,
                   "s390x": 217}

def _load_libc() -> ctypes.CDLL:
    # glibc's soname first: find_library runs `ldconfig -p`, a few ms at every start.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)


_libc = _load_libc()
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if ret < 0:
        err = ctypes.get_errno()
        shown = data if data is None or len(data) < 200 else data[:200] + "..."
        raise OSError(err, f"mount {fstype or 'bind'} {source or ''} on {os.fsdecode(target)} "
                           f"(flags {flags:#x}, options {shown!r}): {os.strerror(err)}")


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {os.fsdecode(target)}")


def pivot_root(new_root: str, put_old: str) -> None:
    machine = os.uname().machine  # what platform.machine() reads, without loading it
    number = _SYS_PIVOT_ROOT.get(machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {machine}")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)),
           f"pivot_root({new_root}, {put_old})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option}, {arg2})")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks) with the v3 ABI."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def syncfs(path: str | os.PathLike[str]) -> None:
    """Make every file written on ``path``'s filesystem durable: syncfs(2), one call where a
    tree of thousands of files would need an fsync each."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _check(_libc.syncfs(fd), f"syncfs {os.fsdecode(os.fspath(path))}")
    finally:
        os.close(fd)
