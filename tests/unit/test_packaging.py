"""The hand-written package list in pyproject.toml covers every package folder of builder/."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_builder_package_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "builder").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found - listed == set(), f"add to pyproject.toml packages: {sorted(found - listed)}"
    assert "builder._grammar" in listed


def test_grammar_is_found() -> None:
    from builder.resources import grammar_path

    assert grammar_path().name == "dockerfile.lark"
