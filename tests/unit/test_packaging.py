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


def test_public_api_is_lazy_and_complete() -> None:
    import subprocess
    import sys

    code = ("import sys, builder; assert 'lark' not in sys.modules and 'builder.solve' not in sys.modules; "
            "from builder import build, BuildRequest, parse_dockerfile, BuildError; "
            "print(parse_dockerfile('FROM scratch\\n').instructions[0].keyword, build.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["FROM", "run_build"]
    import builder

    assert all(hasattr(builder, name) for name in builder.__all__)
