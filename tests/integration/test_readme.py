"""Every command of the README is run here, in order, as a newcomer would run them.

The README's code blocks are read from the file itself: ```python and ```dockerfile
blocks become the project's files (app.py, Dockerfile), each ```sh line is run in the
project folder and must succeed. `rootfs.tar` is the Debian root filesystem the test
session made with debootstrap. The two set-up commands are run too: `.ci/demo` here (with
the cached root filesystem and without reinstalling), `.ci/test` by CI itself.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.rootfs import DEBIAN_TARBALL

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


def setup_commands() -> list[str]:
    """The indented commands under "Set up": exactly two."""
    section = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_readme_has_exactly_two_setup_commands() -> None:
    assert setup_commands() == ["bash .ci/demo", "bash .ci/test"]
    ci = (ROOT / ".ci/run").read_text()
    assert "bash .ci/test" in ci


@pytest.fixture(scope="module")
def rootfs_tar(debian_rootfs: Path) -> Path:
    assert DEBIAN_TARBALL.is_file()
    return DEBIAN_TARBALL


def test_main_job_prints_hello(rootfs_tar: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYBUILD_DEMO_NO_INSTALL": "1", "PYBUILD_DEMO_ROOTFS": str(rootfs_tar),
           "PYBUILD_ROOT": str(tmp_path / "store")}
    done = subprocess.run(["bash", str(ROOT / ".ci/demo")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, Containers!\n"


def test_every_readme_command_runs(rootfs_tar: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.symlink(rootfs_tar, project / "rootfs.tar")
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "store")}
    ran = 0
    outputs: dict[str, str] = {}
    for lang, body in readme_blocks():
        if lang == "python":
            (project / "app.py").write_text(body)
        elif lang == "dockerfile":
            (project / "Dockerfile").write_text(body)
        elif lang == "sh":
            for line in body.splitlines():
                command = line.split("#", 1)[0].strip()
                if not command:
                    continue
                done = subprocess.run(shlex.split(command), cwd=project, capture_output=True,
                                      text=True, env=env, timeout=600)
                assert done.returncode == 0, f"{command}: {done.stderr}"
                outputs[command] = done.stdout
                ran += 1
    assert ran >= 10
    assert outputs["pybuild run --rm hello"] == "Hello, Containers!\n"
    assert (project / "rootfs" / "result.txt").read_text() == "built\n"
    assert "(from" in outputs["pybuild parse --format=buildkit Dockerfile"]
