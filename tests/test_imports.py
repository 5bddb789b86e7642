"""Fences of DESIGN.md: the front end (parse, expand, graph, cache keys) imports nothing
from the executor, the layers or the OCI packages, and the executor imports no OCI types."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "builder"

FRONT_END = ["parse.py", "expand.py", "graph.py", "instructions.py", "dump.py", "cache/keys.py",
             "dockerignore.py", "reference.py"]
FORBIDDEN_FOR_FRONT_END = ("builder.executor", "builder.layers", "builder.oci")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = "builder." + ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    pkg = pkg.rstrip(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("name", FRONT_END)
def test_front_end_does_not_import_back_end(name: str) -> None:
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    bad = {m for m in _imports(path) if m.startswith(FORBIDDEN_FOR_FRONT_END)}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_executor_imports_no_oci_types() -> None:
    for path in (ROOT / "executor").rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith("builder.oci")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_cli_turns_errors_into_exit_status() -> None:
    for path in ROOT.rglob("*.py"):
        if path.name in ("cli.py", "cli_app.py", "__main__.py"):
            continue
        text = path.read_text()
        assert "sys.exit(" not in text, f"{path.relative_to(ROOT)} calls sys.exit"
