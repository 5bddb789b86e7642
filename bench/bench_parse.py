#!/usr/bin/env python3
"""Parser speed, as a user sees it: whole-process wall time, median of 5 runs.

    python3 bench/bench_parse.py [--runs 5] [--instructions 2000]

Measures `pybuild --help` (target <= 0.15 s), `pybuild parse` of a generated Dockerfile with
2,000 instructions (target <= 0.4 s, buildkit and json formats) and, as the reference taken
in the same run, a bare `python3 -c pass`. The first run of all warms the parser cache.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"help": 0.15, "parse": 0.4}


def generate(n: int, seed: int = 1) -> str:
    """A realistic mix: multi-stage FROMs, RUN with continuations, COPY/ENV/LABEL, heredocs."""
    rnd = random.Random(seed)
    out = ["# syntax=docker/dockerfile:1", "# escape=\\", ""]
    made = 0
    while made < n:
        kind = rnd.randrange(12)
        if made % 200 == 0:
            out.append(f"FROM debian:12 AS stage{made // 200}")
        elif kind < 3:
            out.append("RUN apt-get update \\")
            out.append("    && apt-get install -y --no-install-recommends curl ca-certificates \\")
            out.append("    && rm -rf /var/lib/apt/lists/*")
        elif kind == 3:
            out.append(f'ENV PATH="/opt/bin:$PATH" LANG=C.UTF-8 N{made}="value {made}"')
        elif kind == 4:
            out.append(f"COPY --chown=1000:1000 --link src/{made} /app/{made}/")
        elif kind == 5:
            out.append(f'LABEL org.example.n{made}="x" version="1.{made}"')
        elif kind == 6:
            out.append('CMD ["/usr/bin/app", "--port", "8080"]')
        elif kind == 7:
            out.append("# a comment between instructions")
            out.append(f"WORKDIR /srv/{made}")
        elif kind == 8:
            out.append("RUN <<EOF")
            out.append("set -e")
            out.append("echo building")
            out.append("EOF")
        elif kind == 9:
            out.append(f"ARG VERSION_{made}=1.2.3")
        elif kind == 10:
            out.append("HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/")
        else:
            out.append(f"EXPOSE {8000 + made % 1000}/tcp")
        made += 1
        if rnd.randrange(8) == 0:
            out.append("")
    return "\n".join(out) + "\n"


def timed(argv: list[str], runs: int) -> tuple[float, list[float], float]:
    """Median wall time, all wall times, median CPU time (user+sys: less sensitive to a
    busy machine, so both are shown)."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), times, statistics.median(cpu)


def pybuild_argv() -> list[str]:
    """The real entry point (not a pyenv shim, whose bash wrapper costs ~0.1 s by itself)."""
    found = shutil.which("pybuild")
    if found:
        try:
            real = subprocess.run(["pyenv", "which", "pybuild"], capture_output=True, text=True,
                                  check=False)
            if real.returncode == 0 and real.stdout.strip():
                found = real.stdout.strip()
        except OSError:
            pass
        return [found]
    return [sys.executable, "-m", "builder"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--instructions", type=int, default=2000)
    args = ap.parse_args()
    pybuild = pybuild_argv()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Dockerfile"
        text = generate(args.instructions)
        path.write_text(text)
        subprocess.run(pybuild + ["parse", str(path)], check=True, stdout=subprocess.DEVNULL)
        rows = [
            ("python3 -c pass (reference)", [sys.executable, "-c", "pass"], None),
            ("pybuild --help", pybuild + ["--help"], TARGETS["help"]),
            (f"pybuild parse ({args.instructions} instr., buildkit)",
             pybuild + ["parse", "--format=buildkit", str(path)], TARGETS["parse"]),
            (f"pybuild parse ({args.instructions} instr., json)",
             pybuild + ["parse", "--format=json", str(path)], TARGETS["parse"]),
        ]
        print(f"# {os.cpu_count()} cpus, {len(text.splitlines())} lines, "
              f"median of {args.runs} runs, entry point {pybuild[0]}")
        failed = False
        for label, argv, target in rows:
            median, times, cpu = timed(argv, args.runs)
            verdict = "" if target is None else ("ok" if median <= target else "SLOW")
            failed |= verdict == "SLOW"
            spread = " ".join(f"{t:.3f}" for t in times)
            goal = f"(target <= {target:.2f})" if target else ""
            print(f"{label:45s} {median:.3f} s {goal:17s} {verdict:4s} cpu {cpu:.3f} s  [{spread}]")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
