"""Resource limits through cgroups, and what a signal to the builder does to a step."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.executor import Mount
from builder.executor.cgroups import CGROUP_ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

MiB = 1 << 20


def _cgroup_dir(output_line: str, controller: str) -> Path:
    """The host directory of the cgroup a step reported from /proc/self/cgroup."""
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    for line in output_line.splitlines():
        _id, controllers, path = line.split(":", 2)
        if (v2 and controllers == "") or controller in controllers.split(","):
            return (CGROUP_ROOT if v2 else CGROUP_ROOT / controller) / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup in {output_line!r}")


def test_memory_limit_kills_a_greedy_step(busybox_rootfs: Path, run_on) -> None:
    # tmpfs pages are charged to the writer's cgroup: 48 MiB do not fit in 16 MiB.
    greedy = ("/bin/dd", "if=/dev/zero", "of=/big/file", "bs=1M", "count=48")
    mounts = (Mount("tmpfs", "/big", options=("size=256m",)),)
    assert run_on(busybox_rootfs, greedy, mounts=mounts, memory=256 * MiB).code == 0
    assert run_on(busybox_rootfs, greedy, mounts=mounts, memory=16 * MiB).code == 137


def test_memory_limit_with_python(debian_rootfs: Path, run_on) -> None:
    script = "b = b'x' * (200 << 20); print(len(b))"
    assert run_on(debian_rootfs, ("python3", "-c", script), memory=64 * MiB).code == 137
    assert run_on(debian_rootfs, ("python3", "-c", script), memory=512 * MiB).output == \
        f"{200 << 20}\n"


def test_a_step_sees_its_own_cgroup_read_only_at_sys_fs_cgroup(busybox_rootfs: Path, run_on) -> None:
    # as runc shows it (docker run --memory, a BuildKit RUN): the step's cgroup is the root
    # of what it sees there, so it can read its own limit
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    limit = "/sys/fs/cgroup/memory.max" if v2 else "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    script = f"ls /sys/fs/cgroup; echo limit=$(cat {limit}); touch /sys/fs/cgroup/x 2>&1; echo end"
    limited = run_on(busybox_rootfs, script, memory=100 * MiB)
    assert limited.code == 0, limited.output
    lines = limited.output.splitlines()
    assert f"limit={100 * MiB}" in lines and "Read-only file system" in limited.output
    if v2:
        assert "cgroup.procs" in lines and "memory.max" in lines
    else:  # the host's v1 controllers, side by side, as docker lays them out
        host = sorted(e.name for e in os.scandir(CGROUP_ROOT)
                      if e.is_dir(follow_symlinks=False) and e.name != "unified")
        assert lines[:len(host)] == host and "memory" in host
    plain = run_on(busybox_rootfs, script)  # no limit: the builder's own cgroup, unlimited
    assert plain.code == 0 and f"limit={100 * MiB}" not in plain.output
    assert any(line.startswith("limit=") and line != "limit=" for line in plain.output.splitlines())


def test_cpus_set_the_quota_and_the_cgroup_goes_away(busybox_rootfs: Path, run_on) -> None:
    seen: dict[str, str] = {}

    result = run_on(busybox_rootfs, "cat /proc/self/cgroup; sleep 0.3", cpus=0.5,
                    memory=100 * MiB)
    cpu_dir = _cgroup_dir(result.output, "cpu")
    mem_dir = _cgroup_dir(result.output, "memory")
    assert cpu_dir.name.startswith("pybuild-") and mem_dir.name.startswith("pybuild-")
    assert not cpu_dir.exists() and not mem_dir.exists()
    # Read the limits while a step runs: its output callback fires mid-step.
    from builder.executor import RootFS, RunSpec, run_step

    def grab(chunk: bytes) -> None:
        d = _cgroup_dir(chunk.decode(), "cpu")
        if (d / "cpu.max").exists():
            seen["cpu"] = (d / "cpu.max").read_text().strip()
        else:
            seen["cpu"] = (d / "cpu.cfs_quota_us").read_text().strip() + "/" + \
                (d / "cpu.cfs_period_us").read_text().strip()
        m = _cgroup_dir(chunk.decode(), "memory")
        limit = m / "memory.max" if (m / "memory.max").exists() else m / "memory.limit_in_bytes"
        seen["memory"] = limit.read_text().strip()

    upper, work = result.upper.parent / "u-live", result.upper.parent / "w-live"
    upper.mkdir()
    work.mkdir()
    code = run_step(RunSpec(argv=("/bin/sh", "-c", "cat /proc/self/cgroup; sleep 0.3"),
                            cpus=1.5, memory=100 * MiB),
                    RootFS([busybox_rootfs], upper, work), output=grab)
    assert code == 0
    assert seen["cpu"] in ("150000 100000", "150000/100000")
    assert seen["memory"] == str(100 * MiB)


INTERRUPTED = r"""
import os, signal, sys
from pathlib import Path
from builder.executor import RootFS, RunSpec, StepInterrupted, run_step
lower, upper, work = (Path(p) for p in sys.argv[1:4])
def show(chunk):
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
try:
    run_step(RunSpec(argv=("/bin/sh", "-c", "sleep 100 & echo started; wait")),
             RootFS([lower], upper, work), output=show)
except StepInterrupted as e:
    print("interrupted", e.signum, flush=True)
    sys.exit(e.exit_code)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_the_step_and_leaves_nothing(busybox_rootfs: Path, tmp_path: Path,
                                                 signum: int) -> None:
    upper, work, tmp = tmp_path / "upper", tmp_path / "work", tmp_path / "tmp"
    for d in (upper, work, tmp):
        d.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(busybox_rootfs), str(upper),
                             str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    # The step's process is there, seen from the host (the shell's background child may
    # take a moment to exec sleep after "started" is printed).
    deadline = time.monotonic() + 10
    while not subprocess.run(["pgrep", "-f", "^sleep 100$"], capture_output=True).stdout.split():
        assert time.monotonic() < deadline, "the step's sleep never appeared"
        time.sleep(0.05)
    proc.send_signal(signum)
    rest = proc.stdout.read()
    assert proc.wait(timeout=10) == 128 + signum
    assert rest == f"interrupted {signum}\n".encode()
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", "^sleep 100$"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the step's processes outlived the build"
        time.sleep(0.05)
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert list(tmp.iterdir()) == []
    assert not upper.exists() and not work.exists()


def test_interrupt_steps_from_another_thread(busybox_rootfs: Path, run_on) -> None:
    import threading

    from builder.executor import StepInterrupted, interrupt_steps

    caught: list[BaseException] = []

    def worker() -> None:
        try:
            run_on(busybox_rootfs, "echo up; sleep 100")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            caught.append(e)

    import builder.executor.run as run_module

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while not run_module._running:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    interrupt_steps(signal.SIGINT)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], StepInterrupted)
    assert caught[0].exit_code == 130
