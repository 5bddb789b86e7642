"""The first exercise of every Docker course: a Python app printing "Hello, Containers!" on a
Debian base with python3 (the debootstrapped ``debian_rootfs``, brought in as a folder with
--build-context), built without RUN into both archive kinds, which docker loads and runs."""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import oci_config, pybuild, skopeo, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

TAG = "pybuild-test/hello:latest"
DOCKERFILE = """\
FROM debian
WORKDIR /app
COPY app.py .
CMD ["python3", "app.py"]
"""


@pytest.fixture(scope="module")
def hello(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("hello")
    project = write(work / "project", {"Dockerfile": DOCKERFILE,
                                       "app.py": 'print("Hello, Containers!")\n'})
    oci, docker = work / "hello.oci.tar", work / "hello.docker.tar"
    pybuild("build", "--root", str(work / "store"), "--build-context", f"debian={debian_rootfs}",
            # level 1: the 235 MB Debian layer is compressed once, quickly; still gzip
            "--compression-level", "1",
            "-t", TAG, "-o", f"type=oci,dest={oci}", "-o", f"type=docker,dest={docker}",
            str(project), timeout=600)
    return {"oci": oci, "docker": docker}


def test_hello_image_config_and_files(hello: dict[str, Path]) -> None:
    for kind in ("oci", "docker"):
        cfg = oci_config(f"{kind}-archive:{hello[kind]}")
        assert cfg["config"]["Cmd"] == ["python3", "app.py"]
        assert cfg["config"]["WorkingDir"] == "/app"
        assert [h["created_by"] for h in cfg["history"]] == [
            "build context debian (a folder)", "WORKDIR /app", "COPY app.py . # buildkit",
            'CMD ["python3" "app.py"]']
        # every layer has its history entry; the folder's layer is gzip like the others
        assert len(cfg["rootfs"]["diff_ids"]) == 3 == \
            sum(1 for h in cfg["history"] if not h.get("empty_layer"))
    layers = json.loads(skopeo("inspect", "--raw", f"oci-archive:{hello['oci']}"))["layers"]
    assert {layer["mediaType"] for layer in layers} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    with tarfile.open(hello["oci"]) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == \
        "docker.io/" + TAG


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_docker_loads_and_runs_hello(hello: dict[str, Path], docker_cli, kind: str) -> None:
    docker_cli.run("rmi", "-f", TAG)
    loaded = docker_cli.check("load", "-i", str(hello[kind]))
    assert f"Loaded image: {TAG}" in loaded
    try:
        ran = docker_cli.run("run", "--rm", "--network=host", TAG, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "Hello, Containers!\n"
    finally:
        docker_cli.run("rmi", "-f", TAG)
