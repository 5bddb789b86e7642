"""The positions index: for each step position (stage name, step number in the stage), what
the last build keyed there, so a later miss can say which input changed (cache.explain).

``positions/<sha256 of canonical_json([stage, number])>.json`` holds an
``Observation``. It is read for every step and rewritten only when the key at that
position changed, so an unchanged rebuild writes nothing. It is independent of the
Dockerfile's path and of the context's, so a moved project still explains itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..digest import canonical_json, sha256_bytes
from .explain import Observation, reasons

if TYPE_CHECKING:
    from .keys import CacheKey
    from .store import Store

__all__ = ["Explainer", "StepVerdict"]


@dataclass(frozen=True)
class StepVerdict:
    stage: str
    title: str
    cached: bool
    reasons: tuple[str, ...] = ()

    def line(self, verb: str = "WOULD RUN") -> str:
        head = f"[{self.stage}] {self.title}"
        if self.cached:
            return f"{'CACHED':<10} {head}"
        return f"{verb:<10} {head}: {'; '.join(self.reasons)}"


class Explainer:
    """Remembers each step at its position and, on a miss, says why it missed."""

    def __init__(self, store: Store, *, context: Any = None, enabled: bool = True) -> None:
        self.store = store
        self.context = context
        self.enabled = enabled  # False: only remember (a build without --explain)
        self.verdicts: list[StepVerdict] = []
        self._counters: dict[str, int] = {}
        self._mutex = threading.Lock()
        (store.root / "positions").mkdir(exist_ok=True)

    def _position(self, stage: str) -> str:
        with self._mutex:
            n = self._counters.get(stage, 0)
            self._counters[stage] = n + 1
        return sha256_bytes(canonical_json([stage, n])).hex

    def observe_step(self, stage: Any, title: str, parent: CacheKey, key: CacheKey, hit: bool, *,
                     remember: bool = True) -> StepVerdict:
        """The solver's hook: ``stage`` is a graph Stage (its name, its FROM, its ARGs)."""
        base = getattr(stage, "base", None)
        args = frozenset(name for node in getattr(stage, "instructions", ())
                         if getattr(node, "keyword", "") == "ARG" for name, _ in getattr(node, "args", ()))
        return self.observe(stage=stage.display_name, title=title, key=key, hit=hit, parent=parent,
                            base_name=getattr(base, "name", None), arg_names=args, remember=remember)

    def observe(self, *, stage: str, title: str, base_name: str | None, parent: CacheKey,
                key: CacheKey, hit: bool, arg_names: frozenset[str] = frozenset(),
                remember: bool = True) -> StepVerdict:
        pos = self._position(stage)
        path = self.store.root / "positions" / f"{pos}.json"
        old = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            old = Observation.from_json(json.loads(path.read_bytes()))
        same = old is not None and old.key == str(key.digest)
        new: Observation | None = None
        why: tuple[str, ...] = ()
        if not hit and self.enabled:
            new = self._observation(key, parent, base_name)
            why = tuple(reasons(old, new, arg_names=arg_names))
        if remember and not same:
            new = new or self._observation(key, parent, base_name)
            self.store._write_atomic(path, canonical_json(new.to_json()))
        verdict = StepVerdict(stage, title, hit, why)
        with self._mutex:
            self.verdicts.append(verdict)
        return verdict

    def _observation(self, key: CacheKey, parent: CacheKey, base_name: str | None) -> Observation:
        parent_inputs = dict(parent.inputs) if "base" in parent.inputs else None
        op = key.inputs.get("op") or {}
        return Observation(str(key.digest), dict(key.inputs), parent_inputs,
                           self._files(op), base_name)

    def _files(self, op: Mapping[str, Any]) -> dict[str, str] | None:
        """{path: digest} of what a COPY from the context selects (through the stat cache,
        so unchanged files are not read again)."""
        if op.get("kind") not in ("copy", "add") or op.get("from") is not None or self.context is None:
            return None
        from ..context import StatCache

        cache = StatCache(self.store.root / "statcache.json")
        out: dict[str, str] = {}
        try:
            for src in op.get("sources") or []:
                if "://" in src or src.startswith("git@"):
                    continue
                for match in self.context.select(src, excludes=op.get("excludes") or ()):
                    for entry in self.context.walk(match, excludes=op.get("excludes") or ()):
                        rel = os.path.join(match.rel, entry.rel) if entry.rel else match.rel
                        if entry.st is not None and os.path.isfile(entry.path) and not os.path.islink(entry.path):
                            out[rel] = str(cache.digest(entry.path, entry.st))
                        else:
                            out[rel] = "-"
        except Exception:  # noqa: BLE001 - the file list only refines a message
            return None
        cache.save()
        return out
