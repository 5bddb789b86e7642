"""Where the store lives and the one write a cache hit makes: importable without the
store's machinery (``builder.warm`` runs before anything else is imported)."""
from __future__ import annotations

import os

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["count_hit", "default_root", "default_root_dir"]


def default_root() -> Path:
    """``$PYBUILD_ROOT``, else ``$XDG_DATA_HOME/pybuild`` (``~/.local/share/pybuild``)."""
    from pathlib import Path

    return Path(default_root_dir())


def default_root_dir() -> str:
    """``default_root()`` as a string: a replay never loads pathlib (nor, with it, urllib
    and ipaddress)."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "pybuild")


def count_hit(root: str | os.PathLike[str], key_hex: str) -> None:
    """Count a cache hit: one byte appended to usage/<key> (its size is the number of hits,
    its mtime the last use); the index entry itself is never rewritten."""
    # try/except rather than contextlib.suppress: contextlib loads collections and
    # functools, 2 ms of a replay
    try:
        fd = os.open(os.path.join(root, "usage", key_hex), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
    except OSError:
        pass
