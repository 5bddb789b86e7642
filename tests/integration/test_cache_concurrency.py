"""Four builds at once on one store, of the same and of different Dockerfiles: all succeed,
each gives the digest it gives alone, and each key is executed once (the others wait on
its step lock and take the result)."""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.buildtools import PYBUILD, pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

SHARED = "FROM bb\nWORKDIR /app\nCOPY a.txt .\nRUN sleep 1 && cat a.txt > /shared\n"
DOCKERFILES = {
    "one": SHARED + "RUN echo one > /one\n",
    "two": SHARED + "RUN echo two > /two\n",
}


def _args(ctx: Path, store: Path, bb: Path, meta: Path, name: str) -> list[str]:
    return ["build", "--root", str(store), "--progress", "plain", "-f", str(ctx / f"{name}.Dockerfile"),
            "--build-context", f"bb=oci-layout://{bb}:latest", "--source-date-epoch", "0",
            "--metadata-file", str(meta), str(ctx)]


def test_four_builds_share_one_store(tmp_path: Path, local_busybox: Path) -> None:
    ctx = write(tmp_path / "ctx", {"a.txt": "hello\n", **{f"{n}.Dockerfile": t for n, t in DOCKERFILES.items()}})
    alone: dict[str, str] = {}
    for name in DOCKERFILES:
        meta = tmp_path / f"alone-{name}.json"
        pybuild(*_args(ctx, tmp_path / f"alone-{name}", local_busybox, meta, name))
        alone[name] = json.loads(meta.read_text())["containerimage.digest"]

    store = tmp_path / "shared"
    runs = [("one", 0), ("one", 1), ("two", 2), ("two", 3)]
    procs = [subprocess.Popen([*PYBUILD, *_args(ctx, store, local_busybox, tmp_path / f"c{i}.json", name)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, i in runs]
    outs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out

    executed: Counter[str] = Counter()
    for name, i in runs:
        meta = json.loads((tmp_path / f"c{i}.json").read_text())
        assert meta["containerimage.digest"] == alone[name]
        executed.update(s["key"] for s in meta["pybuild.steps"] if not s["cached"])
    # WORKDIR, COPY and the shared RUN are common to all four; each last RUN to two.
    assert len(executed) == 5
    assert set(executed.values()) == {1}, executed
    check = pybuild("cache", "verify", "--root", str(store))
    assert "no damage" in check.stdout
