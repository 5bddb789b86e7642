"""docker build parity details a user sees: --label, -q, and the live display on a terminal."""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.buildtools import oci_config, pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def test_label_and_quiet(project: Path, store: str, local_busybox: Path, tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM base\nLABEL from=dockerfile\nRUN echo noisy output\n"})
    out = tmp_path / "img.tar"
    quiet = pybuild("build", "--root", store, "-q", "--label", "team=build", "--label", "from=flag",
                    "--build-context", f"base=oci-layout://{local_busybox}:latest",
                    "-o", f"type=oci,dest={out}", str(project))
    # -q: only the image ID on stdout, nothing on stderr
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", quiet.stdout)
    assert quiet.stderr == ""
    cfg = oci_config(f"oci-archive:{out}")
    assert quiet.stdout.strip() == "sha256:" + hashlib.sha256(
        subprocess.run(["skopeo", "inspect", "--config", "--raw", f"oci-archive:{out}"],
                       capture_output=True, check=True).stdout).hexdigest()
    # --label is applied to the final image after the Dockerfile's own labels
    assert cfg["config"]["Labels"] == {"from": "flag", "team": "build"}


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script is missing")
def test_live_display_on_a_terminal(project: Path, store: str, local_busybox: Path) -> None:
    write(project, {"a.txt": "a\n", "Dockerfile": (
        "FROM base\nCOPY a.txt /\nRUN echo first line && sleep 1 && echo second line\n")})
    cmd = [sys.executable, "-m", "builder", "build", "--root", store, "-t", "live",
           "--build-context", f"base=oci-layout://{local_busybox}:latest", str(project)]
    # `script` gives the build a real pseudo-terminal: --progress=auto picks the live display
    done = subprocess.run(["script", "-qec", shlex.join(cmd), "/dev/null"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    screen = done.stdout
    assert "\x1b[" in screen  # the live region was redrawn
    # named as BuildKit names them: a stage on a named context counts no steps
    assert re.search(r"=> COPY a\.txt /  \d+\.\ds", screen)
    assert "   | first line" in screen
    assert re.search(r"built live sha256:[0-9a-f]{64} in \d+\.\ds \(0/2 steps cached\)", screen)
    again = subprocess.run(["script", "-qec", shlex.join(cmd), "/dev/null"], capture_output=True,
                           text=True, timeout=300)
    assert "=> CACHED COPY a.txt /" in again.stdout
    assert "(2/2 steps cached)" in again.stdout
