"""The benchmark suite (bench/suite.py) in its smoke form: tiny sizes, one run, pybuild only,
so that it never rots between the full runs made by hand. Checks what a reader of the
results sees: the Markdown table, the JSON rows of every workload and mode, a real PNG."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root"),
    pytest.mark.skipif(not shutil.which("docker-registry") or not shutil.which("skopeo"),
                       reason="the push workload needs docker-registry and skopeo"),
]


def test_bench_smoke_writes_every_workload(debian_rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--smoke",
                           "--out", str(out), "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["smoke"] is True
    rows = {(r["workload"], r["mode"]): r for r in doc["rows"]}
    for workload in ("hello", "bigctx", "multistage", "heavyrun"):
        for mode in ("cold", "warm", "incremental"):
            row = rows[(workload, mode)]
            assert row["failed"] == {}, (workload, mode, row["failed"])
            assert len(row["seconds"]["pybuild"]) == 1
            assert 0 < row["seconds"]["pybuild"][0] < 120
            assert 0 < row["peak_mb"]["pybuild"][0] < 1024
    for comp, ref in (("gzip", "ref:tar | gzip"), ("zstd", "ref:tar | zstd")):
        row = rows[("export", comp)]
        assert set(row["seconds"]) == {"pybuild", ref} and row["ratios"][ref] > 0
    assert rows[("push", "empty registry")]["ratios"]["skopeo"] > 0
    assert doc["meta"]["versions"]["skopeo"].startswith("skopeo version")
    # which interpreter ran pybuild (--smoke runs the bench's own: --install here)
    assert doc["meta"]["versions"]["pybuild's python"] == (
        f"{platform.python_version()} {sys._base_executable}")

    table = (out / "results.md").read_text()
    assert "| workload | mode | pybuild s |" in table
    for workload in ("hello", "bigctx", "multistage", "heavyrun", "export", "push"):
        assert f"| {workload} |" in table
    png = (out / "ratios.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png[-12:]
    # the suite cleans its work folder (contexts, stores) after itself
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert elapsed < 120, f"the smoke run took {elapsed:.0f} s"


def test_bench_venv_interpreter_prefers_the_distributions_python(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The full run's virtual environment is made by the interpreter named, else the
    distribution's python3 when it can make one, else the bench's own."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import peers
    finally:
        sys.path.remove(str(REPO / "bench"))
    assert peers.venv_interpreter("/opt/python/bin/python3") == "/opt/python/bin/python3"
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 0\n")  # a python3 that says it has venv and ensurepip
    fake.chmod(0o755)
    monkeypatch.setattr(peers, "SYSTEM_PYTHON", str(fake))
    assert peers.venv_interpreter(None) == str(fake)
    fake.write_text("#!/bin/sh\nexit 1\n")  # one without them (Debian without python3-venv)
    assert peers.venv_interpreter(None) == sys.executable
    monkeypatch.setattr(peers, "SYSTEM_PYTHON", str(tmp_path / "missing"))
    assert peers.venv_interpreter(None) == sys.executable
