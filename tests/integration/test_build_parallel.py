"""Independent stages run at the same time (--jobs), and the cache can be bypassed for the
whole build (--no-cache) or for named stages only (--no-cache-filter)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

DOCKERFILE = (
    "FROM base AS one\nRUN sleep 1 && echo one > /one\n"
    "FROM base AS two\nRUN sleep 1 && echo two > /two\n"
    "FROM base\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n"
)


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_independent_stages_overlap(project: Path, store: str, local_busybox: Path) -> None:
    write(project, {"Dockerfile": DOCKERFILE})
    done = pybuild("build", "--root", store, "--progress", "rawjson", "--jobs", "2",
                   "--build-context", f"base=oci-layout://{local_busybox}:latest", str(project))
    events = _events(done.stderr)
    names = {e["id"]: e["name"] for e in events if e["event"] == "start"}
    order = [(e["event"], names.get(e["id"], "")) for e in events if e["event"] in ("start", "done")]
    starts = [i for i, (ev, name) in enumerate(order) if ev == "start" and "RUN sleep" in name]
    first_done = next(i for i, (ev, name) in enumerate(order) if ev == "done" and "RUN sleep" in name)
    # both RUN steps started before either finished: the stages ran at the same time
    assert len(starts) == 2 and max(starts) < first_done
    # one after the other with --jobs 1
    serial = pybuild("build", "--root", store + "-serial", "--progress", "rawjson", "--jobs", "1",
                     "--build-context", f"base=oci-layout://{local_busybox}:latest", str(project))
    ev = _events(serial.stderr)
    names = {e["id"]: e["name"] for e in ev if e["event"] == "start"}
    seq = [(e["event"], names.get(e["id"], "")) for e in ev if e["event"] in ("start", "done")
           and "RUN sleep" in names.get(e["id"], "")]
    assert [s for s, _ in seq] == ["start", "done", "start", "done"]


def test_no_cache_and_no_cache_filter(project: Path, store: str, local_busybox: Path,
                                      tmp_path: Path) -> None:
    write(project, {"Dockerfile": DOCKERFILE.replace("sleep 1 && ", "")})
    base = ["--root", store, "--build-context", f"base=oci-layout://{local_busybox}:latest"]

    def steps(*extra: str) -> dict[str, bool]:
        meta = tmp_path / "meta.json"
        pybuild("build", *base, "--metadata-file", str(meta), *extra, str(project))
        return {f"{s['stage']} {s['instruction']}": s["cached"]
                for s in json.loads(meta.read_text())["pybuild.steps"]}

    assert not any(steps().values())
    assert all(steps().values())
    filtered = steps("--no-cache-filter", "two")
    assert [k for k, cached in filtered.items() if not cached] == ["two RUN echo two > /two"]
    assert not any(steps("--no-cache").values())


def test_a_failing_stage_cancels_the_stages_running_beside_it(project: Path, store: str,
                                                               local_busybox: Path) -> None:
    # BuildKit cancels the rest of a failed solve: the other stage's step ends at once
    # (not 60 s later), marked CANCELED, and the build reports the failure
    write(project, {"Dockerfile": "FROM base AS slow\nRUN sleep 60 && echo x > /x\n"
                                  "FROM base AS bad\nRUN sleep 0.5 && exit 4\n"
                                  "FROM base\nCOPY --from=slow /x /x\nCOPY --from=bad /etc/passwd /p\n"})
    failed = pybuild("build", "--root", store, "--progress", "plain", "--jobs", "2", "--build-context",
                     f"base=oci-layout://{local_busybox}:latest", str(project), check=False, timeout=40)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    lines = failed.stderr.splitlines()
    slow = next(ln.split()[0] for ln in lines if ln.endswith(" RUN sleep 60 && echo x > /x"))
    bad = next(ln.split()[0] for ln in lines if ln.endswith(" RUN sleep 0.5 && exit 4"))
    assert f"{bad} ERROR: RUN sleep 0.5 && exit 4 failed: exit code 4" in lines
    assert f"{slow} CANCELED" in lines
    assert not os.listdir(Path(store) / "tmp")  # the cancelled step left nothing behind
