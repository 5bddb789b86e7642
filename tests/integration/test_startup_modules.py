"""What a small build loads: the standard modules a COPY-only build has no use for stay
unloaded (each start of pybuild pays for every module it imports; bench/README.md)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("tempfile", "shutil", "random", "bz2", "lzma", "tarfile", "subprocess", "click", "lark")


def test_a_copy_only_build_loads_no_tempfile_shutil_or_compressors(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nWORKDIR /app\nCOPY app.py .\n")
    (ctx / "app.py").write_text("print('Hello, Containers!')\n")
    # -S: no site-packages .pth hooks (this machine's import certifi, and with it tempfile);
    # the package and its dependencies are still found through PYTHONPATH.
    code = ("import atexit, runpy, sys\n"
            f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
            f"sys.argv = ['pybuild', 'build', '--root', {str(tmp_path / 'store')!r}, '-q', '--no-cache', "
            f"{str(ctx)!r}]\n"
            "runpy.run_module('builder', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                           cwd=tmp_path) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    # The first build ever also makes the parser's tables (with Lark) and keeps them.
    first, second = (r.stdout.splitlines() for r in runs)
    assert first[0].startswith("sha256:") and "lark" in first[1]
    assert second[0].startswith("sha256:") and second[1] == "[]"
