"""What a RUN step costs through `pybuild build`, and the share of it its snapshot takes.

Whole-process wall time of `pybuild build --no-cache` (the base already in the store, so
only the RUN step runs), median of N runs, for:

  stdlib copy      : Debian base, RUN cp -a /usr/lib/python3.11 /copy         (~1,900 files)
  stdlib no-snap   : the same copy onto a tmpfs mount: same work, empty upper dir, no layer
  stdlib undone    : the same copy into the upper dir on disk, removed again in the same
                     step: the files reach the disk as in the first row, but the step ends
                     with nothing to snapshot (its rm makes this baseline a little slower)
  one file, 1 GiB  : a 1 GiB image (Debian + 1 GiB layer), RUN that changes one small file
  one file no-snap : the same image, the change written to a tmpfs mount instead
  one file, Debian : the same one-file RUN on the bare Debian base (~230 MB)
  one file, busybox: and on a busybox image (~2 MB)

The snapshot's share is (with - without) / with, against either baseline: tmpfs counts the
copy's own disk writes as the snapshot's (an upper bound), the undone copy counts its rm as
work (a lower bound). The one-file rows show whether the snapshot
cost grows with the image (it must not: the layer comes from the upper dir only).

Needs root, the Debian tarball made by the test fixtures
(/var/cache/pybuild-tests/debian-bookworm-minbase-python3.tar) and ~3 GB in $TMPDIR.
Usage: python3 bench/bench_run.py [--runs 5] [--gib 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.runbuild import (
    DEBIAN_TARBALL,
    busybox_tree,
    tar_tree,
    write_layout,
)

COPY = "RUN cp -a /usr/lib/python3.11 /copy\n"
COPY_NOSNAP = "RUN --mount=type=tmpfs,target=/t cp -a /usr/lib/python3.11 /t/copy\n"
COPY_UNDONE = "RUN cp -a /usr/lib/python3.11 /copy && rm -rf /copy\n"
ONE = "RUN echo changed >> /etc/debian_version\n"
ONE_NOSNAP = "RUN --mount=type=tmpfs,target=/t cat /etc/debian_version > /t/v && echo changed >> /t/v\n"
ONE_BB = "RUN echo changed >> /etc/passwd\n"


def big_layer(path: Path, gib: float) -> None:
    """An uncompressed layer of ``gib`` GiB: 64 MiB files of incompressible bytes."""
    chunk = os.urandom(1 << 20)
    per_file = 64 << 20
    count = max(1, int(gib * (1 << 30)) // per_file)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for i in range(count):
            info = tarfile.TarInfo(f"big/blob{i:03d}")
            info.size, info.mode = per_file, 0o644
            reader = _Repeat(chunk, per_file)
            tar.addfile(info, reader)  # type: ignore[arg-type]


class _Repeat:
    def __init__(self, chunk: bytes, size: int) -> None:
        self.chunk, self.left = chunk, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = (self.chunk * (n // len(self.chunk) + 1))[:n]
        self.left -= n
        return out


def two_layer_layout(layout: Path, base_tar: Path, extra_tar: Path) -> None:
    """An OCI layout of the base tarball with ``extra_tar`` on top (both uncompressed)."""
    import hashlib
    import json

    write_layout(layout, base_tar)
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    h = hashlib.sha256()
    with open(extra_tar, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    os.link(extra_tar, blobs / h.hexdigest())
    config["rootfs"]["diff_ids"].append("sha256:" + h.hexdigest())
    config["history"].append({"created_by": "bench: 1 GiB"})

    def put(doc: dict) -> dict:
        data = json.dumps(doc).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    manifest["config"].update(put(config))
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": "sha256:" + h.hexdigest(),
                               "size": extra_tar.stat().st_size})
    index["manifests"][0].update(put(manifest))
    (layout / "index.json").write_text(json.dumps(index))


def build(store: Path, layout: Path, ctx: Path, dockerfile: str) -> float:
    (ctx / "Dockerfile").write_text(dockerfile)
    t0 = time.perf_counter()
    done = subprocess.run(["pybuild", "build", "--root", str(store), "--no-cache", "--progress",
                           "quiet", "--build-context", f"base=oci-layout://{layout}:latest",
                           str(ctx)], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"pybuild failed:\n{done.stderr}")
    return elapsed


def median_of(runs: int, store: Path, layout: Path, ctx: Path, dockerfile: str) -> float:
    build(store, layout, ctx, dockerfile)  # warm-up: base unpacked, page cache filled
    return statistics.median(build(store, layout, ctx, dockerfile) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (overlay mounts)")
    if not DEBIAN_TARBALL.exists():
        sys.exit(f"{DEBIAN_TARBALL} is missing: run the integration tests once to make it")
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        ctx = tmp / "ctx"
        ctx.mkdir()
        store = tmp / "store"
        debian = tmp / "debian"
        write_layout(debian, DEBIAN_TARBALL)
        big = tmp / "big"
        big_layer(tmp / "big.tar", args.gib)
        two_layer_layout(big, DEBIAN_TARBALL, tmp / "big.tar")
        bb = tmp / "bb"
        write_layout(bb, tar_tree(busybox_tree(tmp / "bbtree"), tmp / "bb.tar"))

        rows = [
            ("stdlib copy (Debian)", debian, COPY),
            ("stdlib copy, no snapshot", debian, COPY_NOSNAP),
            ("stdlib copy, undone in the step", debian, COPY_UNDONE),
            (f"one file, {args.gib:g} GiB image", big, ONE),
            (f"one file, {args.gib:g} GiB image, no snapshot", big, ONE_NOSNAP),
            ("one file, Debian (~230 MB)", debian, ONE),
            ("one file, busybox (~2 MB)", bb, ONE_BB),
        ]
        results = {}
        for name, layout, step in rows:
            results[name] = median_of(args.runs, store, layout, ctx, "FROM base\n" + step)
            print(f"{name:42s} {results[name]:6.2f} s", flush=True)
        files = sum(len(f) for _, _, f in os.walk("/var/cache/pybuild-tests/"
                                                   "debian-bookworm-minbase-python3/usr/lib/python3.11"))
        copy, nosnap = results["stdlib copy (Debian)"], results["stdlib copy, no snapshot"]
        undone = results["stdlib copy, undone in the step"]
        one = results[f"one file, {args.gib:g} GiB image"]
        one_nosnap = results[f"one file, {args.gib:g} GiB image, no snapshot"]
        print(f"\nstdlib: {files} files; snapshot share {100 * (copy - nosnap) / copy:.0f}% "
              f"({copy - nosnap:+.2f} s) against tmpfs, {100 * (copy - undone) / copy:.0f}% "
              f"({copy - undone:+.2f} s) against the undone copy")
        print(f"one file in {args.gib:g} GiB: snapshot share {100 * (one - one_nosnap) / one:.0f}% "
              f"({one - one_nosnap:+.2f} s); vs busybox {one / results['one file, busybox (~2 MB)']:.2f}x")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
