"""Where `RUN --mount=type=cache` folders live in the store, and which one a mount gets.

BuildKit keys a cache mount by its id and by the snapshot it starts from: none for a plain
`type=cache` mount, the `from=` stage's result, or the folder it makes first when `uid`,
`gid` or `mode` are given (solver/llbsolver/mounts/mount.go getRefCacheDir: `id:refID`).
So the same id with another owner, mode or `from=` is another cache. A build that ignores
the cache (`--no-cache`, `--no-cache-filter`) empties the caches its RUN steps use before
they run (solver/llbsolver/vertex.go detectPrunedCacheID, worker PruneCacheMounts): the
plain one of the id, or every based one of it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from .digest import sha256_bytes
from .fsutil import make_temp_dir

__all__ = ["cache_name", "folder", "locked", "prune"]

_BASED = r"(?s)(.*)@(sha256:[0-9a-f]{64})"  # compiled where used


def cache_name(cache_id: str, base: str | None) -> str:
    """The name a cache is kept under: its id, or `id@sha256:...` of the base it starts
    from (``base``: any text that tells bases apart)."""
    if base is None:
        return cache_id
    return f"{cache_id}@sha256:{sha256_bytes(base.encode()).hex}"


def folder(store_root: Path, name: str) -> Path:
    """The folder of the cache called ``name`` (see cache_name); the based caches of an id
    share a prefix, so they can be found without an index."""
    root = store_root / "cache-mounts"
    m = re.fullmatch(_BASED, name)
    if m is None:
        return root / sha256_bytes(name.encode()).hex[:32]
    return root / (sha256_bytes(m.group(1).encode()).hex[:32] + "-" + m.group(2)[7:39])


@contextlib.contextmanager
def locked(path: Path) -> Iterator[int]:
    """The lock beside a cache folder, held exclusively; yields its descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / (path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def prune(store_root: Path, cache_id: str, *, based: bool,
          remove: Callable[[Path], None]) -> None:
    """Empty the caches of ``cache_id``: the plain one, or (``based``) all that start from
    something. Each is moved aside under its lock, then given to ``remove``."""
    plain = folder(store_root, cache_id)
    targets = [plain] if not based else sorted(
        p for p in plain.parent.glob(plain.name + "-*") if p.suffix != ".lock")
    tmp = store_root / "tmp"
    for path in targets:
        with locked(path):
            if not path.exists():
                continue
            aside = Path(make_temp_dir(tmp, "pruned-"))
            os.rename(path, aside / "cache")
        remove(aside)
