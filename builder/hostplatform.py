"""This machine's platform as docker names it: one table for the whole builder.

Neutral ground: the front end (build args such as TARGETARCH) and the OCI code (picking a
manifest from an index) both read it, and neither may import the other.
"""
from __future__ import annotations

import os

__all__ = ["config_platform", "format_platform", "host_build_platform", "host_machine", "normalize_arch", "parse_platform"]

# uname -m -> (GOARCH, variant), as docker and containerd map them.
_MACHINE = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"), "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""), "loongarch64": ("loong64", ""),
}


def _machine() -> str:
    # platform.machine() is this on Linux; the platform module costs 2-3 ms of every start
    return os.uname().machine


def host_machine() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine, e.g. ("linux", "arm64", "v8")."""
    machine = _machine().lower()
    arch, variant = _MACHINE.get(machine, (machine, ""))
    return "linux", arch, variant


_KNOWN_OS = ("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
             "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos")
_KNOWN_ARCH = ("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
               "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
               "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm")


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalisation of an architecture and its variant (as BuildKit names
    platforms in TARGETPLATFORM and in image configs): x86_64 is amd64, aarch64 is arm64 with
    no variant for v8, arm is v7 unless told, armhf/armel are arm v7/v6."""
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386", "i486", "i586", "i686"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def parse_platform(text: str) -> tuple[str, str, str]:
    """``--platform`` and ``FROM --platform`` values as containerd's platforms.Parse reads them:
    ``os/arch[/variant]``, or one word that is an OS (this machine's architecture) or an
    architecture (linux). Returns the normalised (os, arch, variant); ValueError names what is
    wrong, in containerd's words."""
    parts = text.split("/")
    for part in parts:
        if not part or not all(c.isalnum() or c in "_.-" for c in part):
            raise ValueError(f"{text!r}: invalid platform component {part!r}")
    parts = [p.lower() for p in parts]
    if len(parts) == 1:
        word = parts[0]
        if word in _KNOWN_OS:
            _, arch, variant = host_build_platform()
            return word, arch, variant
        arch, variant = normalize_arch(word, "")
        if arch in _KNOWN_ARCH:
            return "linux", arch, variant
        raise ValueError(f"{text!r}: unknown operating system or architecture")
    if len(parts) > 3:
        raise ValueError(f"{text!r}: cannot parse platform: too many parts")
    os_name = "darwin" if parts[0] == "macos" else parts[0]
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return os_name, arch, variant


def format_platform(platform: tuple[str, str, str]) -> str:
    """``linux/arm64``, ``linux/arm/v7``: as BuildKit writes TARGETPLATFORM."""
    return "/".join(p for p in platform if p)


def host_build_platform() -> tuple[str, str, str]:
    """This machine as a build platform: BUILDPLATFORM's parts (arm64 without its v8)."""
    os_name, arch, variant = host_machine()
    return (os_name, *normalize_arch(arch, variant))


def config_platform(config: dict) -> str | None:
    """An image config's platform as BuildKit names it (``linux/arm64``), or None when the
    config names no architecture."""
    arch = str(config.get("architecture") or "")
    if not arch:
        return None
    return format_platform((str(config.get("os") or "linux"),
                            *normalize_arch(arch, str(config.get("variant") or ""))))
