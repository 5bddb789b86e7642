"""Whether this machine can run a RUN step's programs for another platform.

A step for the host's own architecture (or one its CPU runs natively: 386 on amd64, 32-bit
arm on arm64) runs as is. Any other architecture runs only through an emulator the kernel
starts by itself: a qemu-user entry in /proc/sys/fs/binfmt_misc (Debian's qemu-user-static
registers them), enabled and with the F (fix-binary) flag, so that the emulator is found
inside the step's root filesystem too, as BuildKit relies on (tonistiigi/binfmt).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["emulation_problem"]

# GOARCH -> the name qemu-user gives the architecture
_QEMU = {"amd64": "x86_64", "386": "i386", "arm64": "aarch64", "arm": "arm", "riscv64": "riscv64",
         "s390x": "s390x", "ppc64le": "ppc64le", "ppc64": "ppc64", "mips64le": "mips64el",
         "mips64": "mips64", "mipsle": "mipsel", "mips": "mips", "loong64": "loongarch64"}
# what a host CPU runs without an emulator
_NATIVE = {"amd64": ("amd64", "386"), "arm64": ("arm64", "arm"), "386": ("386",),
           "ppc64le": ("ppc64le",), "s390x": ("s390x",), "riscv64": ("riscv64",)}


def emulation_problem(platform: str, *, binfmt: Path | None = None) -> str | None:
    """None when a step for ``platform`` (``linux/arm64``) can run here; otherwise why not,
    in a sentence that says what to install. ``binfmt``: where binfmt_misc is mounted
    (``$PYBUILD_BINFMT_MISC`` for tests, else /proc/sys/fs/binfmt_misc)."""
    if binfmt is None:
        binfmt = Path(os.environ.get("PYBUILD_BINFMT_MISC") or "/proc/sys/fs/binfmt_misc")
    from .hostplatform import host_build_platform, parse_platform

    os_name, arch, _ = parse_platform(platform)
    host_os, host_arch, _ = host_build_platform()
    if os_name != host_os:
        return f"this {host_os} machine cannot run programs for {os_name}"
    if arch in _NATIVE.get(host_arch, (host_arch,)):
        return None
    qemu = _QEMU.get(arch, arch)
    install = ("install an emulator (Debian: apt-get install qemu-user-static) and make sure "
               f"binfmt_misc is mounted on {binfmt}")
    if not (binfmt / "status").exists():
        return f"running {arch} programs on this {host_arch} machine needs an emulator, and " \
               f"binfmt_misc is not mounted: {install}"
    entry = binfmt / f"qemu-{qemu}"
    try:
        text = entry.read_text()
    except OSError:
        return f"running {arch} programs on this {host_arch} machine needs an emulator, and " \
               f"none is registered ({entry} is missing): {install}"
    lines = text.splitlines()
    if "enabled" not in lines:
        return f"the {arch} emulator is registered but disabled ({entry})"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"the {arch} emulator is registered without the F (fix-binary) flag ({entry}), "
                "so it cannot be found inside a step's root filesystem: register it with "
                "fix-binary, as qemu-user-static does")
    return None
