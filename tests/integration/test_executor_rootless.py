"""Rootless: an unprivileged user runs steps in a user namespace (one uid mapped to root)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

SCRIPT = r"""
import json, sys
from pathlib import Path
from builder.errors import ExecError
from builder.executor import RootFS, RunSpec, run_step
base = Path(sys.argv[1])
results = {}
def step(name, command, **fields):
    upper, work = base / f"u-{name}", base / f"w-{name}"
    upper.mkdir(); work.mkdir()
    out = []
    try:
        code = run_step(RunSpec(argv=("/bin/sh", "-c", command), **fields),
                        RootFS([base / "rootfs"], upper, work), output=out.append)
        results[name] = {"code": code, "output": b"".join(out).decode()}
    except ExecError as e:
        results[name] = {"error": str(e)}
step("root", "id; echo hi > /tmp/x; grep CapEff /proc/self/status; hostname; "
             "ls /proc | grep -c '^[0-9]'; hostname")
step("none", "ls /sys/class/net", network="none")
step("sys", "ls /sys/fs/cgroup | wc -l; touch /sys/x || echo refused")
step("app", "id", user="app")
step("limited", "true", memory=64 << 20)
print(json.dumps(results))
"""


def _python_for_nobody() -> str | None:
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run([*NOBODY, candidate, "-c", "import sys; "
                                "assert sys.version_info >= (3, 11)"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture
def rootless_base(busybox_rootfs: Path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    probe = subprocess.run([*NOBODY, "unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the kernel refuses unprivileged user namespaces: {probe.stderr.strip()}")
    base = Path(tempfile.mkdtemp(prefix="pb-rootless-"))
    try:
        os.chmod(base, 0o755)
        shutil.copytree(busybox_rootfs, base / "rootfs", symlinks=True)
        # As a rootless build unpacks them: the image's files belong to the building user.
        for path in [base, *(base / "rootfs").rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        yield base
    finally:
        shutil.rmtree(base)


def test_rootless_steps(rootless_base: Path) -> None:
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python >= 3.11 that an unprivileged user may run")
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([*NOBODY, python, "-c", SCRIPT, str(rootless_base)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(repo),
                               "TMPDIR": str(rootless_base)})
    if "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"{python} cannot import pybuild's dependencies: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)

    root = results["root"]
    assert root["code"] == 0, root
    lines = root["output"].splitlines()
    assert lines[0] == "uid=0(root) gid=0(root)"
    assert lines[1] == "CapEff:\t00000000a80425fb"
    assert lines[2:5] == ["buildkitsandbox", lines[3], "buildkitsandbox"]
    assert int(lines[3]) < 6
    made = rootless_base / "u-root" / "tmp" / "x"
    assert made.read_text() == "hi\n"
    assert (made.stat().st_uid, made.stat().st_gid) == (65534, 65534)
    assert sorted(p.name for p in (rootless_base / "u-root").iterdir()) == [
        "dev", "proc", "sys", "tmp"]  # the runtime's mount points stay, as with BuildKit

    assert results["none"] == {"code": 0, "output": "lo\n"}
    assert results["sys"]["output"].split()[0] == "0"  # the host's cgroups stay hidden
    assert results["sys"]["output"].endswith("refused\n")
    assert "is not mapped in the rootless user namespace" in results["app"]["error"]
    assert "/etc/subuid" in results["app"]["error"]
    assert "cannot create a cgroup" in results["limited"]["error"]
    # Nothing of the build is left in its temporary directory.
    assert not [p for p in rootless_base.iterdir() if p.name.startswith("pbr")]
