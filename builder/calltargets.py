"""`pybuild build --call targets`: the Dockerfile's stages, as `docker buildx build --call
targets` lists them -- each stage's name, "(default)" on the last (the one built without
--target), and its description: the doc comment above its FROM, a comment line that starts
with the stage's name (`# build compiles the binary` describes `FROM ... AS build`).

Comments belong to the instruction below them: a line that is only `#` drops those above
it, blank lines do not, and parser directives at the top of the file are not comments.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .instructions import From

__all__ = ["Target", "format_targets", "list_targets"]

_DIRECTIVE = re.compile(r"#[\t\n\x0c\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\x0c\r ]*=")
_SPACES = " \t\n\x0b\x0c\r"


@dataclass(frozen=True)
class Target:
    """One stage, as `--call targets` lists it."""

    name: str  # "" for a stage without a name
    description: str
    default: bool
    base: str
    platform: str


def list_targets(dockerfile: Any) -> list[Target]:
    """Every stage of ``dockerfile`` (a parsed ``instructions.Dockerfile``), in order."""
    stages = [(i, ins) for i, ins in enumerate(dockerfile.instructions) if isinstance(ins, From)]
    comments = _comments_above(dockerfile.lines, dockerfile.instructions)
    return [Target(name=ins.stage_name or "",
                   description=_doc_comment(comments[i], ins.stage_name or ""),
                   default=n == len(stages) - 1, base=ins.image, platform=ins.platform or "")
            for n, (i, ins) in enumerate(stages)]


def format_targets(targets: Sequence[Target]) -> str:
    """The table buildx prints: TARGET and DESCRIPTION, the first column padded to its
    widest cell and one space."""
    rows = [("TARGET", "DESCRIPTION")]
    for t in targets:
        name = t.name
        if t.default:
            name = f"{name} (default)" if name else "(default)"
        rows.append((name, t.description))
    width = max(len(name) for name, _ in rows) + 1
    return "".join(f"{name.ljust(width)}{text}\n" for name, text in rows)


def _comments_above(lines: Sequence[str], instructions: Sequence[Any]) -> list[list[str]]:
    """For each instruction, the comment lines between the one before it and it."""
    out: list[list[str]] = []
    start = 0  # 0-based index of the first line after the previous instruction
    for k, ins in enumerate(instructions):
        found: list[str] = []
        directives = k == 0
        for line in lines[start:ins.range.start - 1]:
            if directives and _is_directive(line):
                continue
            directives = False
            if not line.lstrip(_SPACES).startswith("#"):
                continue  # a blank line
            text = line[1:].strip(_SPACES)
            if text:
                found.append(text)
            else:
                found = []
        out.append(found)
        start = ins.range.end
    return out


def _is_directive(line: str) -> bool:
    m = _DIRECTIVE.match(line.lstrip(_SPACES))
    return m is not None and m.group(1).lower() in ("syntax", "escape", "check")


def _doc_comment(comments: Sequence[str], name: str) -> str:
    """BuildKit's rule: the rest of the first comment line that starts with the name and a
    space."""
    if not name:
        return ""
    for line in comments:
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""
