"""`pybuild build` flags that shape what a RUN step's sandbox looks like, as buildx users
pass them: --add-host, --shm-size, --ulimit. What the step sees, and what of it is in the cache key."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration import runbuild, test_run_rootless
from tests.integration.runbuild import Project
from tests.integration.test_rootless_build import Setup

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project
python_for_nobody = test_run_rootless.python_for_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")


def _run_cached(project: Project) -> list[bool]:
    return [s["cached"] for s in project.metadata()["pybuild.steps"] if s["instruction"].startswith("RUN")]


def test_add_host_lines_in_etc_hosts_and_only_names_in_the_key(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN cat /etc/hosts > /hosts.txt\n")
    project.build("--add-host", "db:10.1.2.3", "--add-host", "v6=[2001:db8::1]",
                  "--add-host", "Gw:host-gateway")
    img = project.image()
    layer = img.layer(len(img.layer_digests) - 1)
    lines = layer["hosts.txt"][1].decode().splitlines()
    # BuildKit's file: its own two lines, then one line per host, in the order given
    assert lines[2:] == ["10.1.2.3\tdb", "2001:db8::1\tv6", "127.0.0.1\tgw"]
    assert lines[0].startswith("127.0.0.1\tlocalhost")
    assert "etc/hosts" not in layer  # the step's /etc/hosts is the sandbox's, not the layer's
    # Another address for the same names reuses the step (BuildKit keys the names only) ...
    project.build("--add-host", "db:10.9.9.9", "--add-host", "v6=[2001:db8::1]",
                  "--add-host", "gw:host-gateway")
    assert _run_cached(project) == [True]
    # ... another name, or none, runs it again
    project.build("--add-host", "cache:10.1.2.3")
    assert _run_cached(project) == [False]
    project.build()
    assert _run_cached(project) == [False]


def test_bad_add_host_fails_before_the_build(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN true\n")
    done = project.build("--add-host", "db-10.1.2.3", check=False)
    assert done.returncode == 2
    assert "invalid --add-host 'db-10.1.2.3'" in done.stderr
    assert not project.out.exists()


def _shm_line(text: str) -> list[str]:
    fields = next(line.split() for line in text.splitlines() if line.split()[1:2] == ["/dev/shm"])
    return fields[3].split(",")


def test_shm_size_sizes_dev_shm_and_is_in_the_key(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN grep ' /dev/shm ' /proc/mounts > /shm.txt\n")
    project.build()
    img = project.image()
    default = _shm_line(img.layer(len(img.layer_digests) - 1)["shm.txt"][1].decode())
    assert "size=65536k" in default and "noexec" in default  # docker's default /dev/shm
    project.build("--shm-size", "128m")
    assert _run_cached(project) == [False]  # another mount of the step: another key
    img = project.image()
    given = _shm_line(img.layer(len(img.layer_digests) - 1)["shm.txt"][1].decode())
    # as BuildKit mounts it: a tmpfs of that size, nosuid only (a program may run from it)
    assert "size=131072k" in given and "nosuid" in given and "noexec" not in given
    project.build("--shm-size=128M")
    assert _run_cached(project) == [True]
    done = project.build("--shm-size", "lots", check=False)
    assert done.returncode == 2 and "invalid --shm-size 'lots'" in done.stderr


def test_ulimit_sets_the_step_rlimits_and_is_in_the_key(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -Su) > /limits.txt\n")
    project.build("--ulimit", "nofile=1024:2048", "--ulimit", "nproc=512")
    img = project.image()
    assert img.layer(len(img.layer_digests) - 1)["limits.txt"][1] == b"1024 2048 512\n"
    project.build("--ulimit=nproc=512", "--ulimit=nofile=1024:2048")  # the same, in another order
    assert _run_cached(project) == [True]
    project.build("--ulimit", "nofile=1024:4096", "--ulimit", "nproc=512")
    assert _run_cached(project) == [False]  # BuildKit keys the exec op's ulimits
    img = project.image()
    assert img.layer(len(img.layer_digests) - 1)["limits.txt"][1] == b"1024 4096 512\n"
    done = project.build("--ulimit", "nofile=4096:1024", check=False)
    assert done.returncode == 2 and "invalid --ulimit 'nofile=4096:1024'" in done.stderr


def test_rootless_steps_get_them_too_and_a_limit_above_the_builders_is_said(
        python_for_nobody: str) -> None:
    top = Path(tempfile.mkdtemp(prefix="pb-flags-"))  # pytest's temp dirs are 0700 root
    os.chmod(top, 0o755)
    try:
        setup = Setup(top)
        ctx = top / "flags"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            "FROM bb\nRUN grep db /etc/hosts; grep ' /dev/shm ' /proc/mounts; "
            "echo $(ulimit -Sn) $(ulimit -Hn)\n")
        subprocess.run(["chmod", "-R", "a+rX", str(ctx)], check=True)
        done = setup.as_nobody(python_for_nobody, "build", "--add-host", "db:10.1.2.3",
                               "--shm-size", "96m", "--ulimit", "nofile=512:1024", ctx=ctx)
        assert done.returncode == 0, done.stderr
        assert "10.1.2.3\tdb" in done.stderr and "size=98304k" in done.stderr
        assert "512 1024" in done.stderr
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            return
        # a user namespace cannot raise a hard limit: the step fails saying so, not as a
        # file the namespace cannot map
        done = setup.as_nobody(python_for_nobody, "build", "--ulimit", f"nofile={hard + 1}",
                               ctx=ctx)
        assert done.returncode == 1
        assert f"--ulimit nofile={hard + 1}:{hard + 1}: " in done.stderr
        assert f"the builder's hard limit is {hard}" in done.stderr
        assert "files of the image must belong" not in done.stderr
    finally:
        shutil.rmtree(top)
