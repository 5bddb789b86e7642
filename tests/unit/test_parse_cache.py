"""The grammar's parser tables: built once, cached under the user's cache dir, used without Lark."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import sys\n"
    "from builder.parse import parse_dockerfile\n"
    "parse_dockerfile('FROM a\\nRUN b\\n')\n"
    "print('lark' in sys.modules)\n"
)


def _run(env_cache: str, tmp_path: Path) -> str:
    env = dict(os.environ, XDG_CACHE_HOME=env_cache, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_first_run_builds_and_caches_later_runs_skip_lark(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _run(str(cache), tmp_path) == "True"  # built with Lark
    files = list((cache / "pybuild").glob("dockerfile-*.tables"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert not list((cache / "pybuild").glob(".tables-*"))  # nothing half-written left
    assert _run(str(cache), tmp_path) == "False"  # loaded: Lark not even imported


def test_unwritable_cache_dir_falls_back(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert _run(str(blocked), tmp_path) == "True"
    assert list((tmp_path / "tmp").glob(f"pybuild-{os.getuid()}/dockerfile-*.tables"))


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _run(str(cache), tmp_path)
    (table,) = (cache / "pybuild").glob("dockerfile-*.tables")
    table.write_bytes(b"\x00garbage")
    assert _run(str(cache), tmp_path) == "True"
    assert _run(str(cache), tmp_path) == "False"


def test_help_does_not_import_the_parser() -> None:
    code = ("import sys\nfrom builder.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('builder.parse', 'lark'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
