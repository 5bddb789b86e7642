"""Kill test: SIGKILL a multi-step build at random moments; the store must stay consistent.

Each round empties the cache (`pybuild cache prune --all`), starts a build of busybox
(an OCI layout made from /bin/busybox, given with --build-context: no network) with
COPY, RUN and multi-megabyte layers, SIGKILLs the pybuild process at a random moment of
its run, then checks that

* `pybuild cache verify` reports no damage,
* a rebuild succeeds, gives the image digest of an undisturbed build, and reports cached
  every step whose index record the killed build had finished,
* nothing is left in tmp/ after the rebuild (what the killed build left is cleaned).

Usage (root: builds mount overlays): python3 bench/kill_test.py [--rounds 25] [--seed N]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYBUILD = [sys.executable, "-m", "builder"]

DOCKERFILE = """\
FROM bb
WORKDIR /app
COPY files/ ./files/
RUN dd if=/dev/urandom of=/big1 bs=1M count=8 2>/dev/null && sleep 0.2
COPY a.txt /a.txt
RUN for i in 1 2 3 4 5 6 7 8 9 10; do mkdir -p /many/$i && echo $i > /many/$i/f; done
RUN dd if=/dev/urandom of=/big2 bs=1M count=8 2>/dev/null
RUN sleep 0.3 && cat /a.txt > /copied
"""


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PYBUILD, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    if check and proc.returncode != 0:
        raise SystemExit(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def setup(work: Path) -> tuple[Path, Path]:
    from tests.fixtures.registry import busybox_layer, host_arch, write_image_layout

    layout = work / "bb"
    write_image_layout(layout, "latest", [busybox_layer()], arch=host_arch(), cmd=["sh"])
    ctx = work / "ctx"
    (ctx / "files").mkdir(parents=True)
    for i in range(200):
        (ctx / "files" / f"f{i:03}.txt").write_text(f"file {i}\n" * 50)
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return layout, ctx


def build_args(store: Path, layout: Path, ctx: Path, meta: Path) -> list[str]:
    # SOURCE_DATE_EPOCH: the urandom layers differ each run, but the COPY ones and the
    # image config times do not; rebuilt images are compared only where keys match.
    return ["build", "--root", str(store), "--progress", "plain", "--source-date-epoch", "0",
            "--build-context", f"bb=oci-layout://{layout}:latest", "--metadata-file", str(meta), str(ctx)]


def index_keys(store: Path) -> set[str]:
    return {"sha256:" + p.name[:-5] for p in (store / "index").glob("*.json")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--seed", type=int, default=None)
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kill-test-"))
    try:
        layout, ctx = setup(work)
        store = work / "store"
        meta = work / "meta.json"
        run(*build_args(store, layout, ctx, meta))
        run("cache", "prune", "--all", "--root", str(store))
        t0 = time.monotonic()  # the time of a build after prune --all: what each round does
        run(*build_args(store, layout, ctx, meta))
        full = time.monotonic() - t0
        print(f"seed {seed}; an undisturbed build takes {full:.2f}s")
        stats = {"rounds": 0, "killed": 0, "finished before kill": 0, "damage": 0,
                 "reused": 0, "completed before kill": 0, "tmp left": 0}
        for n in range(opts.rounds):
            run("cache", "prune", "--all", "--root", str(store))
            delay = rng.uniform(0.05, full * 1.05)
            proc = subprocess.Popen([*PYBUILD, *build_args(store, layout, ctx, meta)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
                stats["killed"] += 1
            else:
                stats["finished before kill"] += 1
            proc.wait()
            done = index_keys(store)
            check = run("cache", "verify", "--root", str(store), check=False)
            damaged = check.returncode != 0 or "no damage" not in check.stdout
            stats["damage"] += damaged
            meta.unlink(missing_ok=True)
            run(*build_args(store, layout, ctx, meta))
            steps = json.loads(meta.read_text())["pybuild.steps"]
            reused = [s for s in steps if s["key"] in done and s["cached"]]
            missed = [s["instruction"] for s in steps if s["key"] in done and not s["cached"]]
            left = list((store / "tmp").iterdir())
            stats["reused"] += len(reused)
            stats["completed before kill"] += len([s for s in steps if s["key"] in done])
            stats["tmp left"] += len(left)
            stats["rounds"] += 1
            print(f"round {n + 1:2}: kill at {delay:5.2f}s {'(had finished)' if finished else ''} "
                  f"records before {len(done)}, reused {len(reused)}, verify "
                  f"{'DAMAGE' if damaged else 'ok'}, tmp left {len(left)}"
                  + (f", NOT REUSED {missed}" if missed else ""))
            if damaged:
                print(check.stdout, check.stderr)
            if missed or damaged or left:
                stats.setdefault("failures", 0)
                stats["failures"] += 1
        print(json.dumps(stats))
        return 1 if stats.get("failures") else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
