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


def test_layers_and_executor_load_their_parts_on_first_use() -> None:
    """Writing a layer loads neither the unpacker (tarfile) nor zstandard, and the
    executor's mount helpers not the sandbox; every re-exported name still resolves to
    its module's own object, and a wrong name is an AttributeError."""
    import subprocess
    import sys

    code = (
        "import sys, importlib\n"
        "import builder.layers.compress, builder.layers.tar, builder.executor.spec\n"
        "print(sorted(m for m in ('tarfile', 'zstandard', 'builder.layers.unpack', "
        "'builder.executor.run', 'subprocess') if m in sys.modules))\n"
        "import builder.layers as layers, builder.executor as executor\n"
        "for pkg in (layers, executor):\n"
        "    assert sorted(pkg._HOME) == sorted(pkg.__all__), pkg\n"
        "    for name in pkg.__all__:\n"
        "        home = importlib.import_module(pkg.__name__ + '.' + pkg._HOME[name])\n"
        "        assert getattr(pkg, name) is getattr(home, name), name\n"
        "try:\n"
        "    layers.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "module 'builder.layers' has no attribute 'no_such_name'"]
