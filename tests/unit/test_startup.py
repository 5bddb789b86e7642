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
