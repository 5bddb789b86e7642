"""Keys are stable: the documented example's key, and the same keys and image from two
context paths, two stores, files of other owners and times."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")
DOC = Path(__file__).resolve().parents[2] / "docs" / "cache-keys.md"


def _steps(meta: Path) -> list[dict]:
    return json.loads(meta.read_text())["pybuild.steps"]


def test_documented_example_key_is_the_built_key(tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"a.txt": "hello\n", "Dockerfile": "FROM scratch\nCOPY a.txt /\n"})
    os.chmod(ctx / "a.txt", 0o644)
    pybuild("build", "--root", str(tmp_path / "store"), "--progress", "quiet",
            "--metadata-file", str(tmp_path / "m.json"), str(ctx))
    documented = re.findall(r"= `(sha256:[0-9a-f]{64})`", DOC.read_text())[-1]
    assert _steps(tmp_path / "m.json")[0]["key"] == documented


def test_same_inputs_same_keys_anywhere(tmp_path: Path, local_busybox: Path) -> None:
    dockerfile = ("FROM bb\nARG V=1\nWORKDIR /app\nCOPY app/ ./\n"
                  "RUN cat main.py > /copied && echo $V > /v\n")
    results = []
    for n, (uid, mtime) in enumerate([(0, 1_000_000_000), (4321, 1_700_000_000)]):
        ctx = write(tmp_path.joinpath(f"user{n}", *["nested"] * n, "ctx"), {
            "Dockerfile": dockerfile, "app/main.py": "print('hi')\n", "app/util.py": "X = 1\n"})
        for p in [ctx / "app", *(ctx / "app").iterdir()]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
            os.lchown(p, uid, uid)
            os.utime(p, (mtime, mtime))
        meta = tmp_path / f"m{n}.json"
        pybuild("build", "--root", str(tmp_path / f"store{n}"), "--progress", "quiet",
                "--build-context", f"bb=oci-layout://{local_busybox}:latest",
                "--source-date-epoch", "0", "--metadata-file", str(meta), str(ctx))
        results.append((json.loads(meta.read_text())["containerimage.digest"],
                        [s["key"] for s in _steps(meta)]))
    assert results[0][1] == results[1][1]
    assert len(results[0][1]) == 3
    assert results[0][0] == results[1][0]
