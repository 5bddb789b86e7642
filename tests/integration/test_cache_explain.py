"""`pybuild plan` and `pybuild build --explain`: which steps are cached, which run, and why."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

DOCKERFILE = "FROM bb\nARG VERSION=1\nWORKDIR /app\nCOPY . /app\nRUN echo $VERSION > /v\n"


def test_plan_and_explain_say_why(tmp_path: Path, local_busybox: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "app/main.py": "a\n", "app/util.py": "b\n"})
    flags = ["--root", str(tmp_path / "store"), "--build-context", f"bb=oci-layout://{local_busybox}:latest"]
    first = pybuild("plan", *flags, str(ctx))
    assert "WOULD RUN  [stage-0] WORKDIR /app: no earlier entry" in first.stdout
    assert not list((tmp_path / "store" / "index").iterdir())  # plan ran nothing
    pybuild("build", *flags, "--progress", "quiet", str(ctx))
    assert pybuild("plan", *flags, str(ctx)).stdout.splitlines() == [
        "CACHED     [stage-0] WORKDIR /app", "CACHED     [stage-0] COPY . /app",
        "CACHED     [stage-0] RUN echo $VERSION > /v"]

    (ctx / "app" / "main.py").write_text("changed\n")
    plan = pybuild("plan", *flags, "--build-arg", "VERSION=2", str(ctx)).stdout.splitlines()
    assert plan == ["CACHED     [stage-0] WORKDIR /app",
                    "WOULD RUN  [stage-0] COPY . /app: app/main.py changed",
                    "WOULD RUN  [stage-0] RUN echo $VERSION > /v: build arg VERSION: 1 -> 2"]
    built = pybuild("build", *flags, "--explain", "--progress", "quiet", "--build-arg", "VERSION=2", str(ctx))
    assert "explain: RAN        [stage-0] COPY . /app: app/main.py changed" in built.stderr
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("echo $VERSION", "echo v$VERSION"))
    plan = pybuild("plan", *flags, "--build-arg", "VERSION=2", str(ctx)).stdout.splitlines()
    assert plan[-1] == "WOULD RUN  [stage-0] RUN echo v$VERSION > /v: RUN text changed"


def test_plan_of_a_copy_from_a_stage_that_would_run(tmp_path: Path, local_busybox: Path) -> None:
    # The file exists only once the builder's RUN has run: plan says the COPY would run
    # (it cannot hash what is not there yet) instead of failing with "not found".
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM bb AS builder\nRUN mkdir /out && echo hi > /out/f\n"
                                                 "FROM bb\nCOPY --from=builder /out /out\n"})
    flags = ["--root", str(tmp_path / "store"), "--build-context", f"bb=oci-layout://{local_busybox}:latest"]
    plan = pybuild("plan", *flags, str(ctx)).stdout.splitlines()
    assert plan == ["WOULD RUN  [builder] RUN mkdir /out && echo hi > /out/f: no earlier entry",
                    "WOULD RUN  [stage-1] COPY --from=builder /out /out: no earlier entry"]
    pybuild("build", *flags, "--progress", "quiet", str(ctx))
    assert pybuild("plan", *flags, str(ctx)).stdout.splitlines() == [
        "CACHED     [builder] RUN mkdir /out && echo hi > /out/f",
        "CACHED     [stage-1] COPY --from=builder /out /out"]
