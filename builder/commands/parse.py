"""`pybuild parse FILE`: print the parse of a Dockerfile (buildkit's dump, or typed JSON)."""
from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from ..errors import UsageError

__all__ = ["command", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Instructions (and what they hold) as plain JSON values, with their class as "type"."""
    from ..errors import SourceRange

    if isinstance(value, SourceRange):
        return {"start": value.start, "end": value.end}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.name == "lines":
                continue
            out[f.name] = to_jsonable(getattr(value, f.name))
        return out
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, str):
        # bytes that were not UTF-8 are carried as lone surrogates; show them as U+FFFD
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


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
        out = json.dumps(to_jsonable(dockerfile), indent=2, ensure_ascii=False) + "\n"
        warnings = dockerfile.warnings
    for warning in warnings:
        click.echo(f"[WARNING]: {warning}", err=True)
    sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()
