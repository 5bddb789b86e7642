"""Warm-path benchmark: whole-process wall time of `pybuild build`, median of N runs.

* small: a no-change rebuild of a small Dockerfile (busybox from an OCI layout; WORKDIR,
  COPY, two RUNs)                                          target <= 0.25 s
  (each no-change row is measured twice: as a user sees it, answered from the memo of the
  last build (builder.warm), and with PYBUILD_NO_REPLAY=1, the build that looks every step
  up in the cache -- what a rebuild does when the memo cannot be trusted)
* large: a no-change rebuild with a 20,000-file, 200 MB context (COPY . /ctx)
                                                           target <= 0.5 s
* one file: the large build after changing one file; the COPY must run again, so the
  overhead (wall time minus the step's own duration from --metadata-file) is reported
                                                           target <= 1 s + the step
Reference in the same run: `python3 -c pass` (interpreter start-up). Wall times are the
targets; the CPU time (user + sys) of the no-change rebuilds is printed beside them, as it
moves less than wall time when other work shares the machine.

Usage (root: builds mount overlays): python3 bench/bench_cache.py [--runs 5] [--files 20000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYBUILD = [sys.executable, "-m", "builder"]
# Users' installs keep compiled bytecode; a PYTHONDONTWRITEBYTECODE=1 environment would
# recompile every module of every run (0.2 s of the small rebuild), so it is dropped here.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


CPU: dict[str, list[float]] = {}  # cmd -> CPU seconds (user + sys) of each run: steadier on a busy machine


def timed(cmd: list[str]) -> float:
    key = " ".join(cmd)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = ENV
    if cmd and cmd[0] == "NO_REPLAY":  # the same build without the memo (builder.warm)
        cmd, env = cmd[1:], {**ENV, "PYBUILD_NO_REPLAY": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    CPU.setdefault(key, []).append(
        r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return elapsed


def median_of(runs: int, cmd: list[str], before: object = None) -> tuple[float, float]:
    """Median wall time and median CPU time of ``runs`` runs."""
    times, key = [], " ".join(cmd)
    CPU.pop(key, None)
    for _ in range(runs):
        if callable(before):
            before()
        times.append(timed(cmd))
    return statistics.median(times), statistics.median(CPU[key])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--file-size", type=int, default=10_000)
    opts = ap.parse_args()
    from tests.fixtures.registry import busybox_layer, host_arch, write_image_layout

    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        layout = work / "bb"
        write_image_layout(layout, "latest", [busybox_layer()], arch=host_arch(), cmd=["sh"])
        small = work / "small"
        small.mkdir()
        (small / "a.txt").write_text("hello\n")
        (small / "Dockerfile").write_text("FROM bb\nWORKDIR /app\nCOPY a.txt .\nRUN echo 1 > /one\n"
                                          "RUN echo 2 > /two\nCMD [\"sh\"]\n")
        large = work / "large"
        for i in range(opts.files):
            d = large / f"d{i // 500:03}"
            if i % 500 == 0:
                d.mkdir(parents=True)
            (d / f"f{i:05}.bin").write_bytes(os.urandom(opts.file_size))
        (large / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx\n")
        store = work / "store"
        meta = work / "meta.json"
        base = ["build", "--root", str(store), "--progress", "quiet", "--metadata-file", str(meta)]
        small_cmd = [*PYBUILD, *base, "--build-context", f"bb=oci-layout://{layout}:latest", str(small)]
        large_cmd = [*PYBUILD, *base, str(large)]

        python, python_cpu = median_of(opts.runs, [sys.executable, "-c", "pass"])
        time.sleep(2.1)  # past the racy window of the stat cache and the memo, as files are
        timed(small_cmd)  # between edits
        t_small_full, small_full_cpu = median_of(opts.runs, ["NO_REPLAY", *small_cmd])
        timed(small_cmd)  # (the memo of the first build is still valid: nothing was rewritten)
        t_small, small_cpu = median_of(opts.runs, small_cmd)
        t_cold = timed(large_cmd)
        time.sleep(2.1)
        timed(large_cmd)  # the stat cache now holds every file, the memo is written (not racy)
        t_large_full, large_full_cpu = median_of(opts.runs, ["NO_REPLAY", *large_cmd])
        t_large, large_cpu = median_of(opts.runs, large_cmd)

        target = large / "d000" / "f00000.bin"
        overheads, totals = [], []
        for n in range(opts.runs):
            target.write_bytes(os.urandom(opts.file_size))
            t = timed(large_cmd)
            steps = json.loads(meta.read_text())["pybuild.steps"]
            step = sum(s["duration"] for s in steps if not s["cached"])
            totals.append(t)
            overheads.append(t - step)
        results = {
            "python -c pass": python,
            "small no-change rebuild": t_small,
            "small no-change rebuild, no replay": t_small_full,
            f"large ({opts.files} files, {opts.files * opts.file_size // 10**6} MB) cold build": t_cold,
            "large no-change rebuild": t_large,
            "large no-change rebuild, no replay": t_large_full,
            "large, one file changed (total)": statistics.median(totals),
            "large, one file changed (minus the COPY step)": statistics.median(overheads),
        }
        cpu = {"python -c pass": python_cpu, "small no-change rebuild": small_cpu,
               "small no-change rebuild, no replay": small_full_cpu,
               "large no-change rebuild": large_cpu, "large no-change rebuild, no replay": large_full_cpu}
        for name, value in results.items():
            extra = f"   (CPU {cpu[name]:.3f} s)" if name in cpu else ""
            print(f"{name:<52} {value:7.3f} s{extra}")
        print(json.dumps({**{k: round(v, 4) for k, v in results.items()},
                          **{f"{k} (CPU)": round(v, 4) for k, v in cpu.items()}}))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
