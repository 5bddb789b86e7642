"""Why a step missed the cache: its key inputs compared with those of the most recent
entry for the same position (stage and step number). Pure: no I/O.

``inputs`` are a step key's documents (docs/cache-keys.md): ``{"version", "parent",
"op"}``; ``parent_inputs`` the key document of the parent when it is a base (``{"base",
"layers"}``); ``files`` the ``{path: digest}`` of what a COPY from the context selected.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Observation", "reasons"]

_MAX_FILES = 5


@dataclass(frozen=True)
class Observation:
    """What is remembered of a step at a position (and compared the next time)."""

    key: str
    inputs: Mapping[str, Any]
    parent_inputs: Mapping[str, Any] | None = None
    files: Mapping[str, str] | None = None
    base_name: str | None = None  # the stage's FROM as written

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "inputs": dict(self.inputs), "parent_inputs": self.parent_inputs,
                "files": dict(self.files) if self.files is not None else None,
                "base_name": self.base_name}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Observation:
        return cls(str(doc["key"]), doc["inputs"], doc.get("parent_inputs"), doc.get("files"),
                   doc.get("base_name"))


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else ("none" if value is None else str(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def _env(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def _dict_changes(label: str, old: Mapping[str, str], new: Mapping[str, str],
                  arg_names: frozenset[str]) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        what = f"build arg {name}" if name in arg_names else f"{label} {name}"
        if a is None:
            out.append(f"{what} added: {_short(b)}")
        elif b is None:
            out.append(f"{what} removed (was {_short(a)})")
        else:
            out.append(f"{what}: {_short(a)} -> {_short(b)}")
    return out


def file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """``a changed``, ``b added``, ``c removed``; at most a few, then a count."""
    changed = [p for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]
    out = []
    for path in changed[:_MAX_FILES]:
        shown = path or "."
        out.append(f"{shown} added" if path not in old else f"{shown} removed" if path not in new
                   else f"{shown} changed")
    if len(changed) > _MAX_FILES:
        out.append(f"{len(changed) - _MAX_FILES} more files changed")
    return out


_RUN_FIELDS = (("user", "user"), ("cwd", "working directory"), ("network", "network"),
               ("security", "security"), ("hosts", "--add-host names"),
               ("shm", "--shm-size"), ("ulimits", "--ulimit"), ("mounts", "mounts"))
_COPY_FIELDS = (("sources", "sources"), ("dest", "destination"), ("workdir", "working directory"),
                ("chown", "--chown"), ("chmod", "--chmod"), ("parents", "--parents"),
                ("excludes", "--exclude"), ("link", "--link"), ("remote", "remote source"),
                ("heredocs", "inline files"), ("unpack", "--unpack"), ("epoch", "SOURCE_DATE_EPOCH"))


def _op_reasons(old: Mapping[str, Any], new: Mapping[str, Any], old_files: Mapping[str, str] | None,
                new_files: Mapping[str, str] | None, arg_names: frozenset[str]) -> list[str]:
    kind = new.get("kind")
    if old.get("kind") != kind:
        return [f"instruction changed (was {str(old.get('kind') or '?').upper()})"]
    out: list[str] = []
    if kind == "run":
        if old.get("argv") != new.get("argv") or old.get("script") != new.get("script"):
            out.append("RUN text changed")
        out += _dict_changes("env", _env(old.get("env") or ()), _env(new.get("env") or ()), arg_names)
        out += [f"{label}: {_short(old.get(f))} -> {_short(new.get(f))}" for f, label in _RUN_FIELDS
                if f != "mounts" and old.get(f) != new.get(f)]
        if old.get("mounts") != new.get("mounts"):
            out.append("mounts changed" if [(m.get("type"), m.get("target"), m.get("options"))
                                              for m in old.get("mounts") or []] !=
                       [(m.get("type"), m.get("target"), m.get("options")) for m in new.get("mounts") or []]
                       else "a bind mount's source files changed")
    elif kind in ("copy", "add"):
        out += [f"{label}: {_short(old.get(f))} -> {_short(new.get(f))}" for f, label in _COPY_FIELDS
                if old.get(f) != new.get(f)]
        if old.get("from") != new.get("from"):
            out.append("source stage or image changed")
        if old.get("content") != new.get("content"):
            if old_files is not None and new_files is not None:
                out += file_changes(old_files, new_files) or ["file metadata changed"]
            else:
                out.append("source files changed")
    else:
        out += [f"{f}: {_short(old.get(f))} -> {_short(new.get(f))}"
                for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]
    return out


def reasons(old: Observation | None, new: Observation, *,
            arg_names: Iterable[str] = ()) -> list[str]:
    """Why ``new`` (a step whose key missed) differs from ``old`` (the last entry at the same
    position); ``["no earlier entry"]`` when there is none."""
    if old is None:
        return ["no earlier entry"]
    if old.key == new.key:
        return ["its cached result is gone (pruned, or not finished)"]
    names = frozenset(arg_names)
    out = _op_reasons(old.inputs.get("op") or {}, new.inputs.get("op") or {}, old.files, new.files, names)
    if old.inputs.get("version") != new.inputs.get("version"):
        out.append(f"cache key format changed ({old.inputs.get('version')} -> {new.inputs.get('version')})")
    if old.inputs.get("parent") != new.inputs.get("parent"):
        po, pn = old.parent_inputs, new.parent_inputs
        if pn is not None and "base" in pn:
            name = new.base_name or "scratch"
            if po is None or "base" not in po:
                out.append(f"base changed to {name}")
            elif po.get("base") != pn.get("base"):
                out.append(f"base image {name} now {pn.get('base') or 'scratch'}")
            elif po.get("layers") != pn.get("layers"):
                out.append(f"base {name} content changed")
            else:
                out.append("base changed")
        elif not out:
            out.append("an earlier step changed")
    return out or ["key inputs changed"]
