"""Cache keys: a sha256 over canonical JSON of everything that decides a step's result.

The exact format is written down in docs/cache-keys.md; change KEY_VERSION whenever
the set or the form of the inputs changes, so old entries can never be mistaken for new.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..digest import Digest, canonical_json, sha256_bytes

__all__ = ["KEY_VERSION", "CacheKey", "base_key", "step_key"]

KEY_VERSION = "pybuild.cache.v2"


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A step's key, with the inputs it was made from (kept so `--explain` can diff them)."""

    digest: Digest
    inputs: Mapping[str, Any]

    def __str__(self) -> str:
        return str(self.digest)


def _key(inputs: dict[str, Any]) -> CacheKey:
    doc = {"version": KEY_VERSION, **inputs}
    return CacheKey(sha256_bytes(canonical_json(doc)), doc)


def base_key(*, manifest_digest: str | None, layers: list[str] | None = None) -> CacheKey:
    """The key a stage's chain starts from: its base image's manifest digest (or scratch).

    ``layers`` is used for bases that have no manifest (a local folder): their diff_ids."""
    if manifest_digest is None and not layers:
        return _key({"base": "scratch"})
    return _key({"base": manifest_digest, "layers": layers or []})


def step_key(parent: CacheKey, op: Mapping[str, Any]) -> CacheKey:
    """The key of one filesystem step: its parent's key and its operation after expansion.

    ``op`` is a JSON-able mapping: the instruction, its arguments and flags, and
    for each kind its own inputs (RUN: environment, user, mounts; COPY: source checksums)."""
    return _key({"parent": str(parent.digest), "op": dict(op)})
