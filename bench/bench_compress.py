"""Compression throughput of builder.layers against the usual tools, on the same bytes.

Builds a tar of a mixed tree (text, binaries-like and incompressible files, ~96 MiB by
default), then times, as whole processes, median of N runs:

  ours gzip   : python -c CompressingWriter(gzip, level 6)        vs  gzip -6 -n  (and pigz -6 if present)
  ours zstd   : python -c CompressingWriter(zstd, level 3)        vs  zstd -3 -T0
  write_layer : the whole snapshot -> layer.tgz (walk + tar + gzip) vs  tar -c | gzip -6 -n

Usage: python3 bench/bench_compress.py [--mib 96] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def make_tree(root: Path, mib: int) -> None:
    rng = random.Random(42)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(2000)]
    budget = mib << 20
    i = 0
    while budget > 0:
        d = root / f"d{i % 37}" / f"s{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        kind = i % 4
        size = rng.randint(1 << 10, 2 << 20)
        if kind in (0, 1):  # text-like
            data = b" ".join(rng.choice(words) for _ in range(size // 6))
        elif kind == 2:  # binary-like: structured with repeats
            chunk = rng.randbytes(4096)
            data = b"".join(chunk[rng.randint(0, 2048):] + bytes(rng.randint(0, 512))
                            for _ in range(size // 3000 + 1))
        else:  # already compressed
            data = rng.randbytes(size // 4)
        (d / f"f{i}").write_bytes(data)
        budget -= len(data)
        i += 1


def timed(cmd: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours(compression: str, src: Path, dst: Path, level: int) -> str:
    code = (
        "import sys,shutil;from builder.layers.compress import CompressingWriter as W;"
        f"i=open({str(src)!r},'rb');o=open({str(dst)!r},'wb');"
        f"w=W(o,{compression!r},{level});shutil.copyfileobj(i,w,1<<20);w.close();o.close()"
    )
    return f"{PY} -c \"{code}\""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=96)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    try:
        tree = work / "tree"
        make_tree(tree, args.mib)
        tar = work / "in.tar"
        subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
        size = tar.stat().st_size
        print(f"input: {size / 2**20:.1f} MiB tar, {os.cpu_count()} cores, median of {args.runs}")
        rows: list[tuple[str, float, int]] = []

        def run(label: str, cmd: str, out: Path) -> None:
            t = timed(cmd, args.runs)
            rows.append((label, t, out.stat().st_size))

        run("ours gzip -6 (parallel blocks)", ours("gzip", tar, work / "o.gz", 6), work / "o.gz")
        run("gzip -6 -n", f"gzip -6 -n -c {tar} > {work / 'g.gz'}", work / "g.gz")
        if shutil.which("pigz"):
            run("pigz -6 -n", f"pigz -6 -n -c {tar} > {work / 'p.gz'}", work / "p.gz")
        run("ours zstd -3 (threads=-1)", ours("zstd", tar, work / "o.zst", 3), work / "o.zst")
        run("zstd -3 -T0", f"zstd -q -f -3 -T0 {tar} -o {work / 'z.zst'}", work / "z.zst")
        layer_code = (f"from builder.layers.tar import write_layer;"
                      f"write_layer(__import__('pathlib').Path({str(tree)!r}),"
                      f"__import__('pathlib').Path({str(work / 'l.tgz')!r}))")
        run("write_layer gzip (walk+tar+gz)", f"{PY} -c \"{layer_code}\"", work / "l.tgz")
        run("tar -c | gzip -6 -n", f"tar -C {tree} -cf - . | gzip -6 -n > {work / 't.gz'}",
            work / "t.gz")

        print(f"{'what':34} {'seconds':>8} {'MiB/s':>8} {'ratio':>7}")
        for label, t, out_size in rows:
            print(f"{label:34} {t:8.2f} {size / 2**20 / t:8.1f} {out_size / size:7.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
