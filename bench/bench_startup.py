"""Start-up benchmark: whole-process wall time of a cold `pybuild build` whose own work is
tiny (FROM scratch, WORKDIR, COPY one file, CMD, --no-cache), median of N runs, run pair
by pair in one process so that the ratios cancel machine noise:

* python start:       `python3 -c pass`, the floor any Python builder pays
* build:              the cold build as users run it
* build, no table:    the same with the table of compiled dataclass methods
                      (builder.codecache) moved aside and not written again

With ``--base TAR`` (a root filesystem tarball, e.g. the tests' Debian + python3 one at
/var/cache/pybuild-tests/debian-bookworm-minbase-python3.tar), also the suite's hello
workload on it (`FROM base:1`, WORKDIR, COPY app.py, CMD), as bench/suite.py runs it:

* hello cold:         `--no-cache`
* hello incremental:  app.py changed before each run

Most of such a build is importing pybuild; the last ratio is what the table saves.

Usage (root: builds mount overlays): python3 bench/bench_startup.py [--runs 11] [--base TAR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Users' installs keep compiled bytecode: the suite's environment must not forbid it.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--base", metavar="TAR", help="a root filesystem tarball for the hello rows")
    args = parser.parse_args()
    from builder.codecache import default_file

    table = Path(default_file())
    aside = table.with_name(table.name + ".bench-aside")
    with tempfile.TemporaryDirectory(prefix="pybuild-startup-") as tmp:
        ctx = Path(tmp, "ctx")
        ctx.mkdir()
        (ctx / "app.py").write_text('print("Hello, Containers!")\n')
        (ctx / "Dockerfile").write_text(
            'FROM scratch\nWORKDIR /app\nCOPY app.py .\nCMD ["python3", "app.py"]\n')
        build = [sys.executable, "-m", "builder", "build", "--root", str(Path(tmp, "store")),
                 "--progress", "plain", "--no-cache", "-t", "startup:bench", str(ctx)]
        _timed(build, ENV)  # warm-up: bytecode and the table are written
        rows: dict[str, list[float]] = {"python start": [], "build": [], "build, no table": []}
        hello = _hello(Path(tmp), args.base) if args.base else None
        if hello is not None:
            rows.update({"hello cold": [], "hello incremental": []})
        ratios: list[float] = []
        for i in range(args.runs):
            rows["python start"].append(_timed([sys.executable, "-c", "pass"], ENV))
            if hello is not None:
                rows["hello cold"].append(_timed([*hello, "--no-cache"], ENV))
                (Path(tmp, "hello", "app.py")).write_text(f'print("Hello, Containers! {i}")\n')
                rows["hello incremental"].append(_timed(hello, ENV))
            rows["build"].append(_timed(build, ENV))
            os.replace(table, aside)
            try:
                rows["build, no table"].append(
                    _timed(build, {**ENV, "PYTHONDONTWRITEBYTECODE": "1"}))
            finally:
                os.replace(aside, table)
            ratios.append(rows["build"][-1] / rows["build, no table"][-1])
    start = statistics.median(rows["python start"])
    print(f"{'row':<18} {'median s':>9} {'min s':>7} {'/ start':>8}   ({args.runs} runs)")
    for name, times in rows.items():
        print(f"{name:<18} {statistics.median(times):9.3f} {min(times):7.3f} "
              f"{statistics.median(times) / start:8.2f}")
    print(f"build / build without the table: {statistics.median(ratios):.2f} (median of pairs)")


def _hello(tmp: Path, base: str) -> list[str]:
    """The hello workload's build command, its base imported and one build made."""
    store, ctx = tmp / "hello-store", tmp / "hello"
    ctx.mkdir()
    (ctx / "app.py").write_text('print("Hello, Containers!")\n')
    (ctx / "Dockerfile").write_text('FROM base:1\nWORKDIR /app\nCOPY app.py .\nCMD ["python3", "app.py"]\n')
    _timed([sys.executable, "-m", "builder", "import", "--root", str(store), base, "base:1"], ENV)
    build = [sys.executable, "-m", "builder", "build", "--root", str(store), "--progress", "plain",
             "-t", "hello:bench", str(ctx)]
    _timed(build, ENV)
    return build


if __name__ == "__main__":
    main()
