"""The positions index: for each step position (stage name, step number in the stage), what
the last build keyed there, so a later miss can say which input changed (cache.explain).

``positions/<sha256 of canonical_json([stage, number])>.json`` holds an
``Observation``. It is read for every step and rewritten only when the key at that
position changed, so an unchanged rebuild writes nothing. It is independent of the
Dockerfile's path and of the context's, so a moved project still explains itself.

A COPY from the context is remembered with the digest of each file it selected. A build
that does not explain (``enabled=False``) takes that list from the copy's own walk
(``files_recorder``): no second walk of a large context, no file read twice; a step
that explains, or a hit that moves a position, walks the selection once through the
stat cache the step's key just filled.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import canonical_json, sha256_bytes
from .explain import Observation, reasons

if TYPE_CHECKING:
    from ..context import StatCache, TreeEntry
    from .keys import CacheKey
    from .store import Store

__all__ = ["Explainer", "FilesRecorder", "StepVerdict"]


@dataclass(frozen=True)
class StepVerdict:
    """Whether one step was cached, and why not when it was not."""

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
        # Observations written without their files, waiting for the copy that lists them:
        # {op digest: [(position file, observation)]}.
        self._awaiting: dict[str, list[tuple[Path, Observation]]] = {}
        # new key -> the key the last build made at the same position (the step's donor)
        self._replaced: dict[str, str] = {}
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
        if old is not None and not same:
            with self._mutex:
                self._replaced[str(key.digest)] = old.key
        new: Observation | None = None
        why: tuple[str, ...] = ()
        if not hit and self.enabled:
            new = self._observation(key, parent, base_name)
            why = tuple(reasons(old, new, arg_names=arg_names))
        if remember and not same:
            if new is None and not hit and self._lists_files(key.inputs.get("op") or {}):
                # About to run: the copy's walk lists the files (files_recorder).
                new = self._observation(key, parent, base_name, files=False)
                with self._mutex:
                    self._awaiting.setdefault(_op_id(key.inputs["op"]), []).append((path, new))
            new = new or self._observation(key, parent, base_name)
            self.store._write_atomic(path, canonical_json(new.to_json()))
        verdict = StepVerdict(stage, title, hit, why)
        with self._mutex:
            self.verdicts.append(verdict)
        return verdict

    def replaced(self, key: CacheKey) -> str | None:
        """The key the last build made at ``key``'s position, when it was another one."""
        with self._mutex:
            return self._replaced.get(str(key.digest))

    def _observation(self, key: CacheKey, parent: CacheKey, base_name: str | None, *,
                     files: bool = True) -> Observation:
        parent_inputs = dict(parent.inputs) if "base" in parent.inputs else None
        op = key.inputs.get("op") or {}
        return Observation(str(key.digest), dict(key.inputs), parent_inputs,
                           self._files(op) if files else None, base_name)

    def _stat_cache(self) -> StatCache:
        """The stat cache the COPY key's checksum of this context filled."""
        from ..context import StatCache, stat_cache_file

        if not getattr(self.context, "keeps_stat_cache", True):
            return StatCache(None)
        return StatCache.shared(stat_cache_file(self.store.root / "statcache.json",
                                                os.fspath(self.context.root)))

    def _lists_files(self, op: Mapping[str, Any]) -> bool:
        return op.get("kind") in ("copy", "add") and op.get("from") is None and self.context is not None

    def files_recorder(self, op: Mapping[str, Any]) -> FilesRecorder | None:
        """For the COPY step of ``op`` about to run: a recorder its copy feeds with what
        it copies, or None when no observation waits for that list."""
        with self._mutex:
            if _op_id(op) not in self._awaiting:
                return None
        return FilesRecorder(self, op, self._stat_cache())

    def _files_copied(self, op: Mapping[str, Any], files: dict[str, str]) -> None:
        with self._mutex:
            waiting = self._awaiting.pop(_op_id(op), [])
        for path, obs in waiting:
            self.store._write_atomic(path, canonical_json(replace(obs, files=files).to_json()))

    def _files(self, op: Mapping[str, Any]) -> dict[str, str] | None:
        """{path: digest} of what a COPY from the context selects (through the stat cache
        the step's key filled, so no file is read again)."""
        if not self._lists_files(op):
            return None
        recorder = FilesRecorder(self, op, self._stat_cache())
        excludes = op.get("excludes") or ()
        try:
            for src in op.get("sources") or []:
                if "://" in src or src.startswith("git@"):
                    continue
                for match in self.context.select(src, excludes=excludes):
                    for entry in self.context.walk(match, excludes=excludes):
                        recorder(match.rel, entry)
        except Exception:  # noqa: BLE001 - the file list only refines a message
            return None
        return recorder.files


class FilesRecorder:
    """Called with each entry a COPY from the context writes: the ``{path: digest}`` an
    observation keeps ("-" for what is not a regular file); ``done`` hands it over."""

    def __init__(self, explainer: Explainer, op: Mapping[str, Any], cache: StatCache) -> None:
        self.explainer = explainer
        self.op = op
        self.cache = cache
        self.files: dict[str, str] = {}

    def __call__(self, match_rel: str, entry: TreeEntry) -> None:
        rel = os.path.join(match_rel, entry.rel) if entry.rel else match_rel
        if stat.S_ISREG(entry.st.st_mode):
            self.files[rel] = "sha256:" + self.cache.hexdigest(entry.path, entry.st)
        else:
            self.files[rel] = "-"

    def done(self) -> None:
        # No cache.save: the key's checksum saved what it read; rewriting the whole cache
        # for a file that just stopped being racy costs more (0.15 s for bigctx) than
        # that file's next read.
        self.explainer._files_copied(self.op, self.files)


def _op_id(op: Mapping[str, Any]) -> str:
    return sha256_bytes(canonical_json(dict(op))).hex
