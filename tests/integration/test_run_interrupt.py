"""Ctrl-C and SIGTERM during a RUN of `pybuild build`: the step's whole process tree ends,
its mounts go, its half-made upper dir is removed, pybuild exits 130/143, and nothing of the
build is left: no process, no mount, no temp dir, no snapshot (issue 4)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline.split(b"\0") or f"sleep {marker}".encode() in cmdline:
                found.append(int(entry))
    return found


def _snapshots(store: Path) -> set[str]:
    return set(os.listdir(store / "snapshots")) if (store / "snapshots").is_dir() else set()


@pytest.mark.parametrize(("signum", "snapshotter"), [(signal.SIGINT, "overlay"),
                                                     (signal.SIGTERM, "overlay"),
                                                     (signal.SIGTERM, "copy")])
def test_signal_during_run_leaves_nothing(project: Project, tmp_path: Path, signum: int,
                                          snapshotter: str) -> None:
    marker = f"654{signum}"
    # A tree of processes: a background sleep, a subshell with its own, a writer filling
    # the upper dir.
    project.dockerfile(
        "FROM bb\n"
        "RUN echo base > /base\n"
        f"RUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/c "
        f"(sleep {marker} &) ; sh -c 'sleep {marker}' & "
        f"mkdir /half && for i in $(seq 200); do echo $i > /half/$i; done; "
        f"echo started; sleep {marker}\n")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    # Everything pybuild makes outside its store goes to this TMPDIR, checked empty after.
    env = {**os.environ, "TMPDIR": str(private_tmp), "PYBUILD_SNAPSHOTTER": snapshotter}
    proc = subprocess.Popen(
        ["pybuild", "build", "--root", str(project.store), "--progress", "plain",
         "--build-context", project.contexts[0], str(project.root)],
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.rstrip().endswith(" started"):
                break
        else:
            pytest.fail(f"the step never started: {proc.wait()}")
        time.sleep(0.3)
        assert len(_processes_with(marker)) >= 3
        before = _snapshots(project.store)
        os.kill(proc.pid, signum)
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
        assert code == 128 + signum, rest
        assert f"interrupted by {signal.Signals(signum).name}" in rest
        assert "Traceback" not in rest
    finally:
        if proc.poll() is None:  # the test failed before its signal: end the build
            proc.kill()
            proc.wait()
    # no process of the step
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []
    # no mount of the build (overlay, tmpfs, binds) in the host's table
    mounts = Path("/proc/mounts").read_text()
    assert str(project.store) not in mounts and str(private_tmp) not in mounts
    # no temp dir, no half-made upper dir, no new snapshot
    assert list((project.store / "tmp").iterdir()) == []
    assert list(private_tmp.iterdir()) == []
    assert _snapshots(project.store) == before
    # and the store still works: the next build runs the interrupted step from scratch
    project.dockerfile("FROM bb\nRUN echo base > /base\nRUN ls /half 2>&1 | head -1 > /after\n")
    project.build()
    layers = project.image()
    assert layers.layer(len(layers.layer_digests) - 1)["after"][1] == \
        b"ls: /half: No such file or directory\n"


def test_sigterm_with_stages_running_in_threads(project: Project, tmp_path: Path) -> None:
    """Two stages run at once (in threads, which never see a signal): both steps end."""
    marker = "6599"
    project.dockerfile(
        "FROM bb AS a\nRUN echo a-started; sleep 6599\n"
        "FROM bb AS b\nRUN echo b-started; sleep 6599\n"
        "FROM bb\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    proc = subprocess.Popen(
        ["pybuild", "build", "--root", str(project.store), "--progress", "plain", "--jobs", "2",
         "--build-context", project.contexts[0], str(project.root)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(private_tmp)},
        start_new_session=True)
    try:
        assert proc.stderr is not None
        started = set()
        for line in proc.stderr:
            if line.rstrip().endswith(("a-started", "b-started")):
                started.add(line.rstrip()[-9:])
                if len(started) == 2:
                    break
        os.kill(proc.pid, signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 143, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted by SIGTERM" in rest
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []
    assert str(project.store) not in Path("/proc/mounts").read_text()
    assert list((project.store / "tmp").iterdir()) == []
    assert list(private_tmp.iterdir()) == []
