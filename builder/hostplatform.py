"""This machine's platform as docker names it: one table for the whole builder.

Neutral ground: the front end (build args such as TARGETARCH) and the OCI code (picking a
manifest from an index) both read it, and neither may import the other.
"""
from __future__ import annotations

import platform as _platform

__all__ = ["host_machine"]

# uname -m -> (GOARCH, variant), as docker and containerd map them.
_MACHINE = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"), "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""), "loongarch64": ("loong64", ""),
}


def host_machine() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine, e.g. ("linux", "arm64", "v8")."""
    machine = _platform.machine().lower()
    arch, variant = _MACHINE.get(machine, (machine, ""))
    return "linux", arch, variant
