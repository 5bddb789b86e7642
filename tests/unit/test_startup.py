"""What keeps a pybuild start fast (every command is a fresh interpreter; see
bench/bench_startup.py for the figures)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent / "builder"


def _is_dataclass(node: ast.ClassDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def test_every_dataclass_has_a_docstring() -> None:
    # @dataclass gives a class without one a docstring made from inspect.signature(): about
    # 0.1 ms a class, paid at every start by every class imported.
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef) and _is_dataclass(node) and ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert missing == []


def test_format_time_without_datetime_writes_what_datetime_writes() -> None:
    # builder.solve.format_time uses time.gmtime to keep datetime off a build's start; it
    # must round and format exactly as datetime.fromtimestamp did (Go's RFC 3339 form)
    import datetime as dt
    import random

    from builder.solve import format_time

    def reference(seconds: float) -> str:
        t = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        frac = f"{t.microsecond:06d}".rstrip("0")
        return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"

    rng = random.Random(7)
    values = [0, 1.5, -1.5, -4e-7, 1700000000.9999996, 1700000000.0000004, 2.5e-6, 253402300799]
    values += [rng.uniform(-1e9, 4e9) for _ in range(20000)]
    assert [format_time(v) for v in values] == [reference(v) for v in values]
    assert format_time(1700000000.25) == "2023-11-14T22:13:20.25Z"
