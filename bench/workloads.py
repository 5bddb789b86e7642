"""The benchmark's workloads: each a Dockerfile and a generated context (written under a
temporary folder, never into the repository), in a full size and a tiny smoke size.

``touch`` names the source file that the incremental mode changes before each run; the
Dockerfile reads it early enough that the steps after it must run again.
"""
from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_WORKLOADS",
    "FULL",
    "SMOKE",
    "BuildWorkload",
    "Sizes",
    "change_file",
    "make_blob_file",
    "write_context",
]


@dataclass(frozen=True)
class Sizes:
    files: int          # big context: small files ...
    folders: int        # ... spread over this many folders
    big_files: int      # ... plus this many big files
    big_mib: int        # ... of this size
    stage_mib: int      # multi-stage: each stage writes this much
    stdlib_copies: int  # heavy RUN: copies of the Python standard library
    export_mib: int     # export: the one layer's size


FULL = Sizes(files=20_000, folders=200, big_files=4, big_mib=32, stage_mib=64, stdlib_copies=4,
             export_mib=1024)
SMOKE = Sizes(files=200, folders=10, big_files=2, big_mib=1, stage_mib=1, stdlib_copies=1,
              export_mib=8)


@dataclass(frozen=True)
class BuildWorkload:
    name: str
    what: str                                  # one line for the report
    dockerfile: Callable[[str, Sizes], str]    # (base image reference, sizes) -> text
    files: Callable[[Path, Sizes], None]       # writes the rest of the context
    touch: str                                 # the file the incremental mode changes


def _hello_files(ctx: Path, sizes: Sizes) -> None:
    (ctx / "app.py").write_text('print("Hello, Containers!")\n')


def _hello(base: str, sizes: Sizes) -> str:
    return f'FROM {base}\nWORKDIR /app\nCOPY app.py .\nCMD ["python3", "app.py"]\n'


def _bigctx_files(ctx: Path, sizes: Sizes) -> None:
    rng = random.Random(7)
    pool = rng.randbytes(1 << 16)
    for i in range(sizes.files):
        folder = ctx / f"d{i % sizes.folders:03d}"
        if i < sizes.folders:
            folder.mkdir()
        size = rng.randint(1024, 4096)
        start = rng.randrange(0, len(pool) - size)
        (folder / f"f{i:05d}.txt").write_bytes(pool[start:start + size])
    for n in range(sizes.big_files):
        make_blob_file(ctx / f"big{n}.bin", sizes.big_mib << 20, seed=n)


def _bigctx(base: str, sizes: Sizes) -> str:
    return (f"FROM {base}\nCOPY . /src\n"
            "RUN find /src -type f | wc -l > /count && cat /count\n")


def _multistage_files(ctx: Path, sizes: Sizes) -> None:
    (ctx / "one.txt").write_text("stage one input\n")


def _multistage(base: str, sizes: Sizes) -> str:
    write = (f"dd if=/dev/urandom of=/out.bin bs=1M count={sizes.stage_mib} status=none"
             " && sleep 1")
    return (f"FROM {base} AS one\nCOPY one.txt /\nRUN {write}\n\n"
            f"FROM {base} AS two\nRUN {write}\n\n"
            f"FROM {base}\nCOPY --from=one /out.bin /one.bin\nCOPY --from=two /out.bin /two.bin\n")


def _heavy_files(ctx: Path, sizes: Sizes) -> None:
    (ctx / "marker.txt").write_text("heavy\n")


def _heavy(base: str, sizes: Sizes) -> str:
    copies = " ".join(str(i) for i in range(sizes.stdlib_copies))
    delete = " ".join(f"/opt/stdlib{i}" for i in range(0, sizes.stdlib_copies, 2))
    return (f"FROM {base}\nCOPY marker.txt /\n"
            f"RUN for i in {copies}; do cp -a /usr/lib/python3.11 /opt/stdlib$i; done\n"
            f"RUN rm -rf {delete} /opt/stdlib{sizes.stdlib_copies - 1}/email\n")


def _export_files(ctx: Path, sizes: Sizes) -> None:
    (ctx / "gen.py").write_text(GEN_SCRIPT)


def _export(base: str, sizes: Sizes) -> str:
    return (f"FROM {base}\nCOPY gen.py /\n"
            f"RUN python3 /gen.py /layer.bin {sizes.export_mib << 20} 0 && rm /gen.py\n")


# Half random, half repeated text: compresses about 4:1 with zstd, like real layers, so neither the
# compressor's fast path for zeros nor its give-up path for random data is all we measure.
def generate(path: str, size: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.randbytes(1 << 20)
    text = b"".join(b"line %d of a log file with some words in it\n" % i for i in range(20000))
    with open(path, "wb") as out:
        done = 0
        while done < size:
            n = min(1 << 16, size - done)
            if rng.random() < 0.5:
                at = rng.randrange(0, len(pool) - n)
                out.write(pool[at:at + n])
            else:
                at = rng.randrange(0, len(text) - n)
                out.write(text[at:at + n])
            done += n


# The RUN of the export workload runs this same function in the image's python3.
GEN_SCRIPT = ("import random, sys\n\n\n" + inspect.getsource(generate)
              + "\n\ngenerate(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n")


def make_blob_file(path: Path, size: int, *, seed: int) -> None:
    """The same bytes as GEN_SCRIPT writes in the export workload's RUN."""
    generate(str(path), size, seed)


BUILD_WORKLOADS: dict[str, BuildWorkload] = {w.name: w for w in (
    BuildWorkload("hello", "Python hello app: WORKDIR, COPY app.py, CMD", _hello, _hello_files,
                  "app.py"),
    BuildWorkload("bigctx", "COPY . /src of many small files + big files, RUN counting them",
                  _bigctx, _bigctx_files, "d000/f00000.txt"),
    BuildWorkload("multistage", "two independent stages writing random data + sleep 1, "
                  "final stage copies both", _multistage, _multistage_files, "one.txt"),
    BuildWorkload("heavyrun", "RUN cp -a the Python stdlib several times, RUN rm part of it",
                  _heavy, _heavy_files, "marker.txt"),
)}

EXPORT_WORKLOAD = BuildWorkload("export", "one layer of random+text data", _export,
                                _export_files, "gen.py")


def write_context(workload: BuildWorkload, ctx: Path, base: str, sizes: Sizes) -> Path:
    ctx.mkdir(parents=True)
    workload.files(ctx, sizes)
    (ctx / "Dockerfile").write_text(workload.dockerfile(base, sizes))
    (ctx / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    return ctx


def change_file(ctx: Path, relative: str, run: int) -> None:
    """The incremental mode's edit: one line appended, so the content (not just mtime) changes."""
    with open(ctx / relative, "a") as out:
        out.write(f"# change {run} {os.getpid()}\n")
