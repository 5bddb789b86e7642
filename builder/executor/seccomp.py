"""The seccomp filter a RUN step runs under, as BuildKit's default profile confines it.

Owns: building the classic-BPF program and installing it in the step's process just before
exec. BuildKit runs every RUN (except ``--security=insecure``) under the default seccomp
profile of containerd/moby. That profile is an allow-list; most of what it leaves out needs a
capability the step does not have anyway, so the kernel refuses it already. This filter
refuses the rest, the calls a step *could* make with docker's default capabilities and that
the profile denies to it: making or joining namespaces (``unshare``, ``setns``, ``clone`` with
a CLONE_NEW* flag), the kernel keyrings, bpf, perf events, userfaultfd and io_uring. As in the
profile, they fail with EPERM, and ``clone3`` fails with ENOSYS so that libc falls back to
``clone``, whose flags a filter can read. Standard library only: this runs between fork and
exec.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from . import libc

__all__ = ["install", "program"]

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# classic BPF opcodes
_LD_W_ABS = 0x20    # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15       # BPF_JMP | BPF_JEQ | BPF_K
_JSET_K = 0x45      # BPF_JMP | BPF_JSET | BPF_K
_AND_K = 0x54       # BPF_ALU | BPF_AND | BPF_K
_RET_K = 0x06       # BPF_RET | BPF_K

# offsets in struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little endian)
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_X32_BIT = 0x40000000  # x86_64 syscalls made through the x32 ABI carry this bit
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: the flags the
# profile's clone rule tests (CLONE_NEWTIME exists only for clone3 and unshare)
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000


class _Arch:
    def __init__(self, audit: int, clone: int, clone3: int, denied: dict[str, int]) -> None:
        self.audit, self.clone, self.clone3, self.denied = audit, clone, clone3, denied


# The numbers of the denied calls, per architecture (x86_64 has its own table; arm64 and
# riscv64 share the generic one).
_GENERIC = {"unshare": 97, "setns": 268, "add_key": 217, "request_key": 218, "keyctl": 219,
            "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
            "io_uring_enter": 426, "io_uring_register": 427}
_ARCHES = {
    "x86_64": _Arch(0xC000003E, 56, 435, {
        "unshare": 272, "setns": 308, "add_key": 248, "request_key": 249, "keyctl": 250,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427}),
    "aarch64": _Arch(0xC00000B7, 220, 435, _GENERIC),
    "riscv64": _Arch(0xC00000F3, 220, 435, _GENERIC),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine (``os.uname().machine``), or None on an architecture this
    module has no syscall table for (the step then runs unfiltered, as before)."""
    arch = _ARCHES.get(machine or os.uname().machine)
    if arch is None:
        return None
    numbers = sorted(set(arch.denied.values()))
    # Layout: load arch, test it, load nr, [x32 mask], one test per denied call, clone3,
    # clone; then ALLOW, EPERM, ENOSYS and clone's flag test, in that order.
    body: list[tuple[str, int]] = [("deny", n) for n in numbers]
    body += [("enosys", arch.clone3), ("clone", arch.clone)]
    after_arch = [_insn(_LD_W_ABS, _NR)]
    if arch is _ARCHES["x86_64"]:
        after_arch.append(_insn(_AND_K, ~_X32_BIT))
    n_tests = len(body)
    # A foreign architecture (an i386 binary on x86_64, say) numbers its calls otherwise:
    # it is let through, straight to ALLOW.
    insns = [_insn(_LD_W_ABS, _ARCH), _insn(_JEQ_K, arch.audit, 0, len(after_arch) + n_tests)]
    insns += after_arch
    eperm, enosys, clone_check = 1, 2, 3  # offsets from ALLOW, the first after the tests
    for i, (kind, nr) in enumerate(body):
        remaining = n_tests - i - 1  # tests after this one
        target = {"deny": eperm, "enosys": enosys, "clone": clone_check}[kind]
        insns.append(_insn(_JEQ_K, nr, remaining + target, 0))
    insns.append(_insn(_RET_K, SECCOMP_RET_ALLOW))
    insns.append(_insn(_RET_K, SECCOMP_RET_ERRNO | errno.EPERM))
    insns.append(_insn(_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS))
    insns.append(_insn(_LD_W_ABS, _ARG0_LOW))
    insns.append(_insn(_JSET_K, _CLONE_NAMESPACES, 0, 1))
    insns.append(_insn(_RET_K, SECCOMP_RET_ERRNO | errno.EPERM))
    insns.append(_insn(_RET_K, SECCOMP_RET_ALLOW))
    return b"".join(insns)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> bool:
    """Confine the calling thread and its future children; False when there is nothing to
    install (unknown architecture, or a kernel built without seccomp filters).

    Needs CAP_SYS_ADMIN in the current user namespace (it is called before the step drops
    to its user), since the step must keep no_new_privs off for setuid programs, as in
    BuildKit."""
    code = program()
    if code is None:
        return False
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
    except OSError as e:
        if e.errno == errno.EINVAL:  # CONFIG_SECCOMP_FILTER is off: run unconfined, as runc
            return False
        raise OSError(e.errno, f"installing the seccomp filter: {e.strerror}") from None
    return True
