"""Path helpers shared by the builder's file operations: joining inside a root safely."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["secure_join"]

_MAX_LINKS = 255


def secure_join(root: Path, path: str) -> Path:
    """``root/path`` with every symlink on the way resolved as if ``root`` were ``/``.

    The result never leaves ``root``: ``..`` stops at it and absolute link targets
    restart from it, the way a path resolves inside a container. The last component is
    resolved too when it is a link (callers that must not follow it use the parent)."""
    root = Path(root)
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise OSError(40, "too many levels of symbolic links", str(candidate))
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)
