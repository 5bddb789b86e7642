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


def test_every_readme_command_runs(rootfs_tar: Path, tmp_path: Path, registry, tls_registry) -> None:
    """Each ```sh line runs through bash in the project folder. The README's registry names
    stand for registries of the test session: localhost:5000 for a plain one on loopback,
    registry.example.com for one with TLS (its CA in a certs.d folder) and a password."""
    project = tmp_path / "project"
    project.mkdir()
    os.symlink(rootfs_tar, project / "rootfs.tar")
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "store"),
           "DOCKER_CONFIG": str(tmp_path / "docker-config"),
           "PYBUILD_CERTS_D": str(tls_registry.certs_d),
           "REGISTRY_PASSWORD": tls_registry.password}
    hosts = {"localhost:5000": registry.host, "registry.example.com": tls_registry.host}
    ran = 0
    outputs: dict[str, str] = {}
    for lang, body in readme_blocks():
        if lang == "python":
            (project / "app.py").write_text(body)
        elif lang == "dockerfile":
            (project / "Dockerfile").write_text(body)
        elif lang == "sh":
            for line in body.splitlines():
                command = line.split(" #", 1)[0].strip()
                if not command or command.startswith("#"):
                    continue
                real = command.replace(" -u alice ", f" -u {tls_registry.user} ")
                for name, host in hosts.items():
                    real = real.replace(name, host)
                done = subprocess.run(["bash", "-c", real], cwd=project, capture_output=True,
                                      text=True, env=env, timeout=600)
                assert done.returncode == 0, f"{command}: {done.stderr}"
                outputs[command] = done.stdout
                ran += 1
    assert ran >= 15
    assert outputs["pybuild run --rm hello"] == "Hello, Containers!\n"
    assert (project / "rootfs" / "result.txt").read_text() == "built\n"
    assert "(from" in outputs["pybuild parse --format=buildkit Dockerfile"]
    listed = outputs["pybuild build --call targets ."].splitlines()
    assert listed[0].split() == ["TARGET", "DESCRIPTION"] and "(default)" in listed[-1]
    assert "alice/python-hello" in outputs["pybuild images"]
    # what was pushed is what the registry serves
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                              f"docker://{registry.host}/alice/python-hello:v1"],
                             capture_output=True, text=True, check=True)
    assert '"Digest"' in inspect.stdout
    assert (project / "hello.tar").stat().st_size > 0
