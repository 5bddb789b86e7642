"""`pybuild build --annotation`: what buildx users find in the image manifest (and the OCI
archive's index.json entry for `manifest-descriptor:`), locally, in the archive and after
a push; and on the image index of a build for several platforms or with provenance."""
from __future__ import annotations

import json
import os
import tarfile

import pytest
import requests

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _archive(path) -> tuple[dict, dict]:
    """The OCI archive's index.json entry and the manifest it names."""
    with tarfile.open(path) as tar:
        entry = json.load(tar.extractfile("index.json"))["manifests"][0]  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile("blobs/sha256/" + entry["digest"].split(":")[1]))  # type: ignore[arg-type]
    return entry, manifest


def test_annotations_in_the_manifest_the_archive_the_store_and_the_registry(project: Project, registry) -> None:
    project.dockerfile("FROM bb\nRUN echo built > /built\n")
    name = f"{registry.host}/ann/app:1"
    project.build("--push", "-t", name,
                  "--annotation", "org.opencontainers.image.source=https://example.com/app",
                  "--annotation", "manifest:org.opencontainers.image.description=a=b, c",
                  "--annotation", "manifest-descriptor:com.example.channel=beta")
    wanted = {"org.opencontainers.image.source": "https://example.com/app",
              "org.opencontainers.image.description": "a=b, c"}
    entry, manifest = _archive(project.out)
    assert manifest["annotations"] == wanted
    # the descriptor's own, beside the names the archive gives it
    assert entry["annotations"]["com.example.channel"] == "beta"
    assert "com.example.channel" not in manifest["annotations"]
    meta = project.metadata()
    assert meta["containerimage.descriptor"]["annotations"] == {"com.example.channel": "beta"}
    # as pushed
    got = requests.get(f"{registry.url}/v2/ann/app/manifests/1", headers={"Accept": OCI_MANIFEST},
                       timeout=10)
    assert got.status_code == 200 and got.json()["annotations"] == wanted
    # as stored: `pybuild inspect` shows them, and a later `pybuild push` keeps them
    shown = json.loads(runbuild.pybuild("inspect", "--root", str(project.store), name).stdout)
    assert shown[0]["Manifest"]["annotations"] == wanted
    runbuild.pybuild("tag", "--root", str(project.store), name, f"{registry.host}/ann/again:1")
    runbuild.pybuild("push", "--root", str(project.store), f"{registry.host}/ann/again:1")
    again = requests.get(f"{registry.url}/v2/ann/again/manifests/1", headers={"Accept": OCI_MANIFEST},
                         timeout=10)
    assert again.json()["annotations"] == wanted


def test_annotations_change_the_image_not_the_steps(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN echo built > /built\n")
    project.build()
    plain = project.metadata()
    project.build("--annotation", "k=v")
    annotated = project.metadata()
    assert [s["cached"] for s in annotated["pybuild.steps"]] == [True]
    assert annotated["containerimage.config.digest"] == plain["containerimage.config.digest"]
    assert annotated["containerimage.digest"] != plain["containerimage.digest"]
    project.build()  # and without them again: the image made before, not the annotated one
    assert project.metadata()["containerimage.digest"] == plain["containerimage.digest"]
    assert "annotations" not in _archive(project.out)[1]


@pytest.mark.parametrize("bad, said", [
    ("novalue", "expected KEY=VALUE"),
    # BuildKit's words: one platform and no attestation make no index
    ("index:k=v", "index annotations not supported for single platform export"),
    ("index-descriptor:k=v", "index annotations not supported for single platform export"),
    ("layer:k=v", "unknown annotation type 'layer'"),
    ("manifest[plan9/mips]:k=v", "this build makes no plan9/mips image"),
    ("com.example:k=v", "'com.example' is not a type"),
])
def test_bad_annotations_fail_before_the_build(project: Project, bad: str, said: str) -> None:
    project.dockerfile("FROM bb\nRUN true\n")
    done = project.build("--annotation", bad, check=False)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert not project.out.exists()


def test_an_output_with_docker_media_types_says_it_leaves_them_out(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN true\n")
    done = project.build("--annotation", "k=v", "-o", f"type=docker,dest={project.out}.docker")
    assert "the docker output uses docker media types, which carry no annotations" in done.stderr
    assert _archive(project.out)[1]["annotations"] == {"k": "v"}  # the OCI one has them
    assert "carry no annotations" not in project.build("-o", f"type=docker,dest={project.out}.d2").stderr


def _index_archive(path) -> tuple[dict, dict, dict[str, tuple[dict, dict]]]:
    """An OCI archive holding an index: its index.json entry, the index, and each image
    manifest by platform ("linux/amd64"): (its entry in the index, the manifest)."""
    with tarfile.open(path) as tar:
        def blob(digest: str) -> dict:
            return json.load(tar.extractfile("blobs/sha256/" + digest.split(":")[1]))  # type: ignore[arg-type]

        entry = json.load(tar.extractfile("index.json"))["manifests"][0]  # type: ignore[arg-type]
        index = blob(entry["digest"])
        images = {f"{d['platform']['os']}/{d['platform']['architecture']}": (d, blob(d["digest"]))
                  for d in index["manifests"] if d["platform"]["os"] != "unknown"}
    return entry, index, images


def test_index_annotations_go_on_the_index_and_scoped_ones_on_their_platform(project: Project) -> None:
    project.dockerfile("FROM scratch\nCOPY Dockerfile /\n")
    project.build("--platform", "linux/amd64,linux/arm64",
                  "--annotation", "index:org.opencontainers.image.description=both",
                  "--annotation", "index-descriptor:com.example.entry=idx",
                  "--annotation", "manifest:com.example.all=1",
                  "--annotation", "manifest[linux/arm64]:com.example.arch=arm",
                  "--annotation", "manifest-descriptor[linux/amd64]:com.example.desc=amd")
    entry, index, images = _index_archive(project.out)
    assert entry["annotations"]["com.example.entry"] == "idx"
    assert index["annotations"] == {"org.opencontainers.image.description": "both"}
    (amd_entry, amd), (arm_entry, arm) = images["linux/amd64"], images["linux/arm64"]
    assert amd["annotations"] == {"com.example.all": "1"}
    assert arm["annotations"] == {"com.example.all": "1", "com.example.arch": "arm"}
    assert amd_entry["annotations"] == {"com.example.desc": "amd"} and "annotations" not in arm_entry
    assert project.metadata()["containerimage.descriptor"]["annotations"] == {"com.example.entry": "idx"}


def test_with_provenance_one_platform_has_an_index_to_annotate(project: Project) -> None:
    project.dockerfile("FROM scratch\nCOPY Dockerfile /\n")
    project.build("--provenance", "mode=min", "--annotation", "index:k=v",
                  "--annotation", "index-descriptor:e=1", "--annotation", "manifest-descriptor:m=2",
                  "--annotation", "a=b")
    entry, index, images = _index_archive(project.out)
    assert index["annotations"] == {"k": "v"} and entry["annotations"]["e"] == "1"
    [(image_entry, manifest)] = images.values()
    assert image_entry["annotations"] == {"m": "2"} and manifest["annotations"] == {"a": "b"}
    # the attestation manifest's entry keeps BuildKit's own annotations only
    [att] = [d for d in index["manifests"] if d["platform"]["os"] == "unknown"]
    assert set(att["annotations"]) == {"vnd.docker.reference.digest", "vnd.docker.reference.type"}
