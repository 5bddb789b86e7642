"""Paths inside a root that no layer entry can climb out of.

``clean_name`` turns a tar entry name into a relative path (a leading '/' is stripped as
docker does; '..' is refused outright, since no honest layer needs it).
``secure_join`` resolves a relative path under a root the way the kernel would if the
root were '/': every symlink met on the way is followed with '..' and absolute targets
kept inside the root, like Go's filepath-securejoin. It assumes nobody else changes the
tree while we unpack (we are its only writer); it is not a defence against a concurrent
attacker, which would need openat2(RESOLVE_IN_ROOT).
"""
from __future__ import annotations

import errno

from builder.errors import LayerError
from builder.fsutil import MAX_SYMLINKS, resolve_rel

__all__ = ["clean_name", "secure_join", "join_rel", "MAX_SYMLINKS"]



def join_rel(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def clean_name(name: str) -> str:
    """The relative, normalised form of a tar entry name ("" for the root)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise LayerError(f"layer entry {name!r} climbs out of the layer with '..'",
                             hint="the layer is malformed or hostile; it was not unpacked")
        parts.append(part)
    return "/".join(parts)


def secure_join(root: str, unsafe: str, *, entry: str | None = None) -> str:
    """``unsafe`` resolved under ``root``, returned relative to ``root`` ("" is the root).

    Every existing component of the result is a real directory or the final non-symlink
    object; components that do not exist yet are kept literally. ``entry`` names the tar
    entry in errors.
    """
    try:
        return resolve_rel(root, unsafe)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise LayerError(f"layer entry {entry or unsafe!r}: too many levels of symbolic links") from None

