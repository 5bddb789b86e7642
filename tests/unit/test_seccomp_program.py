"""The seccomp program's shape, read back as a BPF interpreter would run it."""
from __future__ import annotations

import errno
import struct

import pytest

from builder.executor import seccomp


def _run(code: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """A tiny interpreter for the few classic-BPF instructions the program uses."""
    insns = [struct.unpack("=HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = insns[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == 0x54:
            acc &= k
        elif op == 0x15:
            pc += jt if acc == k else jf
        elif op == 0x45:
            pc += jt if acc & k else jf
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


X86_64 = 0xC000003E
EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
ALLOW = seccomp.SECCOMP_RET_ALLOW


@pytest.mark.parametrize(("nr", "arg0", "want"), [
    (272, 0, EPERM),                                  # unshare
    (308, 0, EPERM),                                  # setns
    (250, 0, EPERM),                                  # keyctl
    (435, 0, seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS),  # clone3: libc falls back to clone
    (56, 0x01200011, ALLOW),                          # clone as fork() makes it
    (56, 0x10000000, EPERM),                          # clone(CLONE_NEWUSER)
    (56, 0x00020000 | 0x11, EPERM),                   # clone(CLONE_NEWNS)
    (0, 0, ALLOW), (59, 0, ALLOW), (105, 0, ALLOW),   # read, execve, setuid
    (0x40000000 | 272, 0, EPERM),                     # unshare through the x32 ABI
])
def test_x86_64_verdicts(nr: int, arg0: int, want: int) -> None:
    code = seccomp.program("x86_64")
    assert code is not None and len(code) % 8 == 0
    assert _run(code, nr, X86_64, arg0) == want


def test_foreign_architecture_and_unknown_machine() -> None:
    code = seccomp.program("x86_64")
    assert code is not None
    assert _run(code, 272, 0x40000003) == ALLOW  # an i386 binary: other numbers, let through
    assert seccomp.program("mips") is None
    arm = seccomp.program("aarch64")
    assert arm is not None and _run(arm, 97, 0xC00000B7) == EPERM and _run(arm, 63, 0xC00000B7) == ALLOW
