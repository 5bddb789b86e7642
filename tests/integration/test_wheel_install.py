"""A plain (not editable) install of the wheel, run from another folder, parses: the
grammar ships inside the package."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_install_parses_from_another_folder(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("pybuild-*.whl"))
    venv = tmp_path / "venv"
    # The dependencies come from this interpreter's site-packages; pybuild from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--force-reinstall", str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Dockerfile").write_text("FROM scratch\nCOPY a /b\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    where = subprocess.run([str(venv / "bin/python"), "-c", "import builder; print(builder.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True, env=env)
    assert where.stdout.startswith(str(venv))
    out = subprocess.run([str(venv / "bin/pybuild"), "parse", "--format=buildkit", "Dockerfile"],
                         cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == '(from "scratch")\n(copy "a" "/b")\n'


    # The installed command starts pybuild before anything else: no launcher's own imports
    # (pip's entry-point launcher loads re first, a quarter of a replayed build's time).
    # In an environment of its own, so that no .pth file of this interpreter's loads re
    # first; pybuild's dependencies are not there, and only the imports up to
    # builder.cli are looked at.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bare / "bin/python"), "install",
                    "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    out = subprocess.run([str(bare / "bin/pybuild"), "--version"], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120, env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    names = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
             if line.startswith("import time:")]
    assert "site" in names and "builder.cli" in names, out.stderr
    between = names[names.index("site") + 1:names.index("builder.cli")]
    assert set(between) <= {"__future__", "builder"}, between
