"""`pybuild parse FILE`: print the parse of a Dockerfile (buildkit's dump, or typed JSON)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from ..errors import UsageError

__all__ = ["command", "to_jsonable"]


_FIELDS: dict[type, tuple[str, ...]] = {}


def to_jsonable(value: Any) -> Any:
    """Instructions (and what they hold) as plain JSON values, with their class as "type"."""
    if isinstance(value, str):
        if value.isascii():
            return value
        # bytes that were not UTF-8 are carried as lone surrogates; show them as U+FFFD
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(value):
            return value
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(value) if f.name != "lines")
    if cls.__name__ == "SourceRange":
        return {"start": value.start, "end": value.end}
    out: dict[str, Any] = {"type": cls.__name__}
    for name in names:
        out[name] = to_jsonable(getattr(value, name))
    return out


def _json_text(dockerfile: Any) -> str:
    """One instruction per line: readable, and json's C encoder (no indent) stays fast."""
    data = to_jsonable(dockerfile)
    items = data.pop("instructions")
    head = json.dumps(data, ensure_ascii=False)[:-1]
    body = ",\n  ".join(json.dumps(i, ensure_ascii=False) for i in items)
    return f'{head}, "instructions": [\n  {body}\n]}}\n'


def _read(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "Dockerfile"
    try:
        with open(path, "rb") as f:
            return f.read(), path
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


@click.command("parse")
@click.argument("file", default="Dockerfile", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["buildkit", "json"]), default="buildkit",
              show_default=True,
              help="buildkit: the reference parser's AST dump; json: the typed instructions.")
def command(file: str, fmt: str) -> None:
    """Print the parse of a Dockerfile (FILE, or - for standard input)."""
    data, name = _read(file)
    if fmt == "buildkit":
        from ..dump import dump_buildkit
        from ..parse import parse_nodes

        parsed = parse_nodes(data, filename=name)
        out = dump_buildkit(parsed)
        warnings = parsed.warnings
    else:
        from ..parse import parse_dockerfile

        dockerfile = parse_dockerfile(data, filename=name)
        out = _json_text(dockerfile)
        warnings = dockerfile.warnings
    for warning in warnings:
        click.echo(f"[WARNING]: {warning}", err=True)
    try:
        sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # `pybuild parse ... | head`: the reader left; say nothing more (and let the
        # interpreter's final flush go to /dev/null instead of raising again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
