"""What a small build loads: the standard modules a COPY-only build has no use for stay
unloaded, and a replayed no-change build loads less still (each start of pybuild pays for
every module it imports; bench/README.md)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("tempfile", "shutil", "random", "bz2", "lzma", "tarfile", "subprocess", "click", "lark")


def _build(tmp_path: Path, ctx: Path, watched: tuple[str, ...], *args: str) -> tuple[str, str]:
    """(the image ID printed, which of ``watched`` were loaded) of `pybuild build -q ARGS`.

    Run with -S: no site-packages .pth hooks (this machine's import certifi, and with it
    tempfile and pathlib); the package and its dependencies are found through PYTHONPATH.
    Started as the installed `pybuild` command starts it; a replay ends with os._exit,
    which runs no atexit hook, so that exit reports too."""
    code = ("import atexit, os, sys\n"
            "def report():\n"
            f"    print(sorted(m for m in {watched!r} if m in sys.modules), flush=True)\n"
            "atexit.register(report)\n"
            "_exit = os._exit\n"
            "def leave(status):\n"
            "    report()\n"
            "    _exit(status)\n"
            "os._exit = leave\n"
            f"sys.argv = ['pybuild', 'build', '--root', {str(tmp_path / 'store')!r}, '-q', "
            f"*{args!r}, {str(ctx)!r}]\n"
            "from builder.cli import main\n"
            "sys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("PYBUILD_NO_REPLAY", None)
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    image_id, loaded = run.stdout.splitlines()
    assert image_id.startswith("sha256:")
    return image_id, loaded


def _project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nWORKDIR /app\nCOPY app.py .\n")
    (ctx / "app.py").write_text("print('Hello, Containers!')\n")
    return ctx


def test_a_copy_only_build_loads_no_tempfile_shutil_or_compressors(tmp_path: Path) -> None:
    ctx = _project(tmp_path)
    # The first build ever also makes the parser's tables (with Lark) and keeps them.
    _, first = _build(tmp_path, ctx, HEAVY, "--no-cache")
    assert "lark" in first
    _, second = _build(tmp_path, ctx, HEAVY, "--no-cache")
    assert second == "[]"


def test_a_replayed_build_loads_neither_typing_nor_pathlib_nor_the_builder(tmp_path: Path) -> None:
    ctx = _project(tmp_path)
    time.sleep(2.1)  # a memo is only kept for a context not changed in the last two seconds
    # A replay is a Python start plus a stat of the context: nor re (through json), OpenSSL
    # (through hashlib), threading, contextlib or click, which would add a third to it.
    watched = ("typing", "pathlib", "dataclasses", "builder.solve", "builder.parse", "re", "json",
               "hashlib", "_hashlib", "threading", "contextlib", "click")
    built, first = _build(tmp_path, ctx, watched, "-t", "small")
    assert "builder.solve" in first
    replayed, second = _build(tmp_path, ctx, watched, "-t", "small")
    assert replayed == built and second == "[]"
