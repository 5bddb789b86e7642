"""Failures a user can cause end in one clear sentence and exit 1 (2 for usage), never a
traceback; and `pybuild run` passes its flags through to the process."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def test_a_full_disk_is_one_sentence(project: Path, tmp_path: Path) -> None:
    write(project, {"big": os.urandom(3_000_000), "Dockerfile": "FROM scratch\nCOPY big /\n"})
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        failed = pybuild("build", "--root", str(small / "store"), str(project), check=False)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert failed.returncode == 1
    assert "No space left on device" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_usage_errors_exit_2_with_a_suggestion(project: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\n"})
    typo = pybuild("build", "--platfrom", "linux/arm64", str(project), check=False)
    assert typo.returncode == 2
    assert "Did you mean" in typo.stderr and "'--platform'" in typo.stderr
    other = pybuild("build", "--platform", "linux/s390x/a/b", str(project), check=False)
    assert other.returncode == 2
    assert "--platform: 'linux/s390x/a/b': cannot parse platform: too many parts" in other.stderr
    bad_name = pybuild("build", "-t", "Not/Valid:tag", str(project), check=False)
    assert bad_name.returncode in (1, 2)
    assert "invalid" in bad_name.stderr.lower() and "Traceback" not in bad_name.stderr
    missing = pybuild("build", str(project / "nowhere"), check=False)
    assert missing.returncode == 1
    assert "is not a folder" in missing.stderr and "Traceback" not in missing.stderr


def test_bad_option_values_fail_before_the_build(project: Path, tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\nCOPY Dockerfile /\n"})
    store = str(tmp_path / "store")
    for args, message in [
        (("--compression-level", "99"), "--compression-level 99: gzip level must be 0-9, not 99"),
        (("--compression", "zstd", "--compression-level", "30"),
         "--compression-level 30: zstd level must be -7..22, not 30"),
        (("--iidfile", str(tmp_path / "no/such/iid")),
         f"--iidfile {tmp_path}/no/such/iid: the folder {tmp_path}/no/such does not exist"),
        (("--metadata-file", str(tmp_path / "nowhere/m.json")),
         f"--metadata-file {tmp_path}/nowhere/m.json: the folder {tmp_path}/nowhere does not exist"),
        (("--cpus", "-1"), "Invalid value for '--cpus': -1.0 is not in the range x>0."),
        (("--jobs", "-1"), "Invalid value for '--jobs': -1 is not in the range x>=0."),
    ]:
        failed = pybuild("build", "--root", store, *args, str(project), check=False)
        assert failed.returncode == 2, failed.stderr
        assert message in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    assert not (tmp_path / "store").exists()  # nothing was built


def test_run_passes_env_volumes_user_and_network(project: Path, store: str, local_busybox: Path,
                                                 tmp_path: Path) -> None:
    write(project, {"Dockerfile": 'FROM base\nENV FROM_IMAGE=1\nCMD ["echo", "default"]\n'})
    pybuild("build", "--root", store, "-t", "runcheck", "--build-context",
            f"base=oci-layout://{local_busybox}:latest", str(project))
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    default = pybuild("run", "--root", store, "--rm", "runcheck")
    assert default.stdout == "default\n"
    image_id = json.loads(pybuild("inspect", "--root", store, "runcheck").stdout)[0]["Id"]
    for by_id in (image_id, image_id.removeprefix("sha256:")[:12]):  # as docker run takes it
        assert pybuild("run", "--root", store, "--rm", by_id).stdout == "default\n"
    out = pybuild("run", "--root", store, "--rm", "-e", "GREETING=hello", "-v", f"{shared}:/mnt",
                  "--network", "none", "-u", "nobody", "runcheck", "sh", "-c",
                  "echo $GREETING $FROM_IMAGE; cat /mnt/in.txt; id -u; ls /sys/class/net")
    assert out.stdout.splitlines() == ["hello 1", "from the host", "65534", "lo"]
    failed = pybuild("run", "--root", store, "runcheck", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    absent = pybuild("run", "--root", store, "no-such-image", check=False)
    assert absent.returncode == 2 and "not found" in absent.stderr
