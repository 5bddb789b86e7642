"""podman takes what pybuild writes: both archive kinds load, with our config and layers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]


def _podman(tmp: Path, *args: str) -> str:
    # podman refuses a runroot path longer than 50 characters: keep it short.
    run = Path(f"/tmp/pbp-{tmp.name}-{os.getpid()}")
    cmd = ["podman", "--root", str(tmp / "root"), "--runroot", str(run),
           "--storage-driver", "vfs", "--events-backend", "file", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_podman_loads_oci_and_docker_archives(project: Path, store: str, local_busybox: Path,
                                              tmp_path: Path) -> None:
    write(project, {"hello.txt": "hi\n", "Dockerfile": (
        "FROM base\nCOPY hello.txt /srv/\nENV GREETING=hi\nCMD [\"cat\", \"/srv/hello.txt\"]\n")})
    oci, docker = tmp_path / "i.oci.tar", tmp_path / "i.docker.tar"
    pybuild("build", "--root", store, "--build-context", f"base=oci-layout://{local_busybox}:latest",
            "-t", "example/podman-check:v1", "-o", f"type=oci,dest={oci}",
            "-o", f"type=docker,dest={docker}", "--iidfile", str(tmp_path / "iid"), str(project))
    iid = (tmp_path / "iid").read_text().split(":", 1)[1]
    for archive, tag in ((oci, "oci"), (docker, "docker")):
        state = tmp_path / tag
        state.mkdir()
        out = _podman(state, "load", "-i", str(archive))
        assert "example/podman-check:v1" in out
        info = json.loads(_podman(state, "image", "inspect", "example/podman-check:v1"))[0]
        assert info["Id"] == iid
        assert info["Config"]["Cmd"] == ["cat", "/srv/hello.txt"]
        assert "GREETING=hi" in info["Config"]["Env"]
        assert len(info["RootFS"]["Layers"]) == 2
        shutil.rmtree(f"/tmp/pbp-{state.name}-{os.getpid()}", ignore_errors=True)
