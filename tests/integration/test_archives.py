"""The archives pybuild writes, checked by the tools users load them with: skopeo (oci-archive:
and docker-archive:), umoci (unpacks what skopeo copied out) and docker load on a private dockerd."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.oci.archive import read_archive, write_docker_archive, write_oci_archive
from builder.oci.image import ImageSpec, image_from_manifest
from builder.oci.layout import OciLayout
from builder.oci.registry import Registry
from builder.reference import ImageRef
from tests.fixtures.dockerd import dockerd  # noqa: F401  (a fixture)
from tests.fixtures.registry import run

TAG = "pybuild-test/busybox:1.36"


@pytest.fixture(scope="module")
def pulled(registry, busybox_image, tmp_path_factory) -> ImageSpec:
    """busybox pulled from the registry with pybuild's client into a blob directory."""
    blobs = tmp_path_factory.mktemp("pulled")
    ref = ImageRef.parse(busybox_image.ref)
    reg = Registry(registry.host, credentials=None)
    resolved = reg.resolve(ref)
    for layer in resolved.manifest.layers:
        reg.fetch_blob(ref, layer, blobs / "sha256" / layer.digest.hex)
    (blobs / "sha256" / resolved.manifest.config.digest.hex).write_bytes(resolved.config_bytes)
    return image_from_manifest(resolved.manifest_bytes, lambda d: blobs / d.algorithm / d.hex)


@pytest.fixture(scope="module")
def archives(pulled, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("archives")
    return {"oci": write_oci_archive(out / "oci.tar", pulled, [TAG]),
            "docker": write_docker_archive(out / "docker.tar", pulled, [TAG])}


def _skopeo(registry, *args: str) -> str:
    return run(["skopeo", "--policy", str(registry.policy), *args]).stdout


def _unpack_and_check(registry, source: str, tmp: Path) -> None:
    layout = tmp / "layout"
    _skopeo(registry, "copy", "--quiet", source, f"oci:{layout}:t")
    bundle = tmp / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:t", str(bundle)])
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin/busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert os.readlink(rootfs / "bin/sh") == "busybox"
    assert "nobody:x:65534" in (rootfs / "etc/passwd").read_text()
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]


def test_skopeo_inspects_oci_archive(registry, pulled, archives):
    info = json.loads(_skopeo(registry, "inspect", f"oci-archive:{archives['oci']}"))
    assert info["Digest"] == str(pulled.manifest_digest)
    assert info["Layers"] == [str(d.digest) for d in pulled.layers]
    assert info["Architecture"] == pulled.config.architecture
    raw = _skopeo(registry, "inspect", "--raw", f"oci-archive:{archives['oci']}:1.36")
    assert raw.encode() == pulled.manifest_bytes


def test_skopeo_inspects_docker_archive(registry, pulled, archives):
    info = json.loads(_skopeo(registry, "inspect", f"docker-archive:{archives['docker']}"))
    assert info["Layers"] == [str(d) for d in pulled.config.diff_ids]  # uncompressed layers
    config = json.loads(_skopeo(registry, "inspect", "--config", f"docker-archive:{archives['docker']}"))
    assert config == json.loads(pulled.config_bytes)


def test_oci_archive_copies_and_unpacks_with_umoci(registry, archives, tmp_path):
    _unpack_and_check(registry, f"oci-archive:{archives['oci']}", tmp_path)


def test_docker_archive_copies_and_unpacks_with_umoci(registry, archives, tmp_path):
    _unpack_and_check(registry, f"docker-archive:{archives['docker']}", tmp_path)


def test_read_archive_reads_back_both(pulled, archives):
    for kind, path in archives.items():
        got = read_archive(path)
        assert got.kind == kind and got.config_digest == pulled.config_digest
        assert [layer.diff_id for layer in got.layers] == list(pulled.config.diff_ids)
    assert read_archive(archives["oci"]).repo_tags == ("docker.io/pybuild-test/busybox:1.36",)
    assert read_archive(archives["docker"]).repo_tags == (TAG,)


def test_layout_written_from_pulled_image_is_read_by_umoci(registry, pulled, tmp_path):
    from builder.oci.layout import write_layout

    write_layout(tmp_path / "layout", pulled, ["busybox:v1"])
    assert OciLayout(tmp_path / "layout").resolve("v1").manifest_digest == pulled.manifest_digest
    run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:v1", str(tmp_path / "bundle")])
    assert (tmp_path / "bundle/rootfs/bin/busybox").exists()


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_docker_load(dockerd, pulled, archives, kind):  # noqa: F811
    dockerd.docker("rmi", "-f", TAG)
    loaded = dockerd.docker("load", "-i", str(archives[kind]))
    assert loaded.returncode == 0, loaded.stderr
    assert f"Loaded image: {TAG}" in loaded.stdout
    inspect = json.loads(dockerd.docker("image", "inspect", TAG).stdout)
    assert inspect[0]["Id"] == str(pulled.config_digest)
    assert inspect[0]["RootFS"]["Layers"] == [str(d) for d in pulled.config.diff_ids]
    ran = dockerd.docker("run", "--rm", "--network", "none", TAG, "busybox", "echo", "hello")
    if ran.returncode != 0 and "cgroup" in ran.stderr:
        pytest.skip(f"dockerd loaded the image but cannot run containers here: {ran.stderr[-300:]}")
    assert ran.stdout == "hello\n", ran.stderr
