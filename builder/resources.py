"""Finds the data files that ship with pybuild (the Lark grammar)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["grammar_path"]


def grammar_path(name: str = "dockerfile.lark") -> Path:
    """The grammar file: in a wheel it is the data package builder._grammar; in a
    source checkout (also an editable install) it is the repository's grammar/ folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_grammar" / name, here.parent / "grammar" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"pybuild's grammar {name} is missing from the installation")
