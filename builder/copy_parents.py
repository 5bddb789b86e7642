"""``COPY --parents``: which entries a source selects and the path each keeps below dest.

As BuildKit's frontend: the source splits at its first ``/./`` into a pivot directory and
a pattern (no pivot: the tree's root and the whole path). The pattern is an include
pattern (``*``, ``?``, ``[...]`` per component, ``**`` for any number of components);
an entry it matches is selected whole and keeps its path relative to the pivot. Without
wildcards the path must exist.
"""
from __future__ import annotations

import os
import stat
from typing import Iterator

from builder.context import SourceMatch, SourceTree, clean_source, go_match, has_wildcards

__all__ = ["select_parents", "parents_match"]


def parents_match(pats: list[str], comps: list[str]) -> bool:
    """Whether the pattern components match the path components exactly."""
    if not pats:
        return not comps
    if pats[0] == "**":
        return any(parents_match(pats[1:], comps[i:]) for i in range(len(comps) + 1))
    return bool(comps) and go_match(pats[0], comps[0]) and parents_match(pats[1:], comps[1:])


def _could_match_below(pats: list[str], comps: list[str]) -> bool:
    """Whether some path below ``comps`` could match ``pats``."""
    if not comps:
        return bool(pats)
    if not pats:
        return False
    if pats[0] == "**":
        return True
    return go_match(pats[0], comps[0]) and _could_match_below(pats[1:], comps[1:])


def select_parents(tree: SourceTree, source: str) -> list[tuple[SourceMatch, str]]:
    """The matches of a --parents source with their paths relative to the pivot."""
    pivot, sep, pattern = source.partition("/./")
    if not sep:
        pivot, pattern = "/", source
    pattern = clean_source(pattern)
    pivot_rel = clean_source(pivot)
    if not has_wildcards(pivot) and not has_wildcards(pattern):
        # A plain path must exist: let the tree say why it does not.
        tree.select(f"{pivot_rel}/{pattern}" if pivot_rel else pattern)
    from builder.context import resolve_in_root

    visible = getattr(tree, "visible", None)
    base = resolve_in_root(tree.root, pivot_rel, visible=visible if getattr(tree, "ignore", None) else None)
    pats = pattern.split("/") if pattern else []
    out: list[tuple[SourceMatch, str]] = []
    for sub, is_dir in _scan(tree, base, "", pats):
        full = f"{base}/{sub}" if base else sub
        out.append((SourceMatch(full, full, is_dir), sub))
    return out


def _scan(tree: SourceTree, base: str, sub: str, pats: list[str]) -> Iterator[tuple[str, bool]]:
    path = os.path.join(os.fspath(tree.root), base, sub)
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in entries:
        child = f"{sub}/{e.name}" if sub else e.name
        full = f"{base}/{child}" if base else child
        is_dir = stat.S_ISDIR(e.stat(follow_symlinks=False).st_mode)
        if not tree.visible(full, is_dir):
            continue
        comps = child.split("/")
        if parents_match(pats, comps):
            yield child, is_dir
        elif is_dir and _could_match_below(pats, comps):
            yield from _scan(tree, base, child, pats)
