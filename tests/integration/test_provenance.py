"""SLSA provenance attestations (--provenance) where users read them: pushed to the real
registry and read back with skopeo, in an OCI archive read by skopeo and umoci, and as
provenance.json in local and tar outputs. The image itself must not change."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

ATT = {"vnd.docker.reference.type": "attestation-manifest"}
V02 = "https://slsa.dev/provenance/v0.2"


def _skopeo(registry, *args: str) -> bytes:
    return subprocess.run(["skopeo", "--policy", str(registry.policy), *args],
                          capture_output=True, check=True).stdout


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def _check_attestation(index: dict, blob, image_digest: str, base_digest: str | None,
                       name: str | None) -> dict:
    """The index lists the image, then its attestation manifest, shaped as BuildKit's; the
    statement in it names the image; returns the statement."""
    image_entry, att_entry = index["manifests"]
    assert image_entry["digest"] == image_digest and image_entry["platform"]["os"] == "linux"
    assert att_entry["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert att_entry["annotations"] == {**ATT, "vnd.docker.reference.digest": image_digest}
    manifest = json.loads(blob(att_entry["digest"]))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.in-toto+json"
    assert layer["annotations"] == {"in-toto.io/predicate-type": V02}
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config == {"architecture": "unknown", "os": "unknown", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    stmt = json.loads(blob(layer["digest"]))
    assert stmt["_type"] == "https://in-toto.io/Statement/v0.1" and stmt["predicateType"] == V02
    assert [s["digest"] for s in stmt["subject"]] == ([{"sha256": image_digest[7:]}] if name else [])
    if name:
        assert stmt["subject"][0]["name"] == name
    if base_digest:
        assert [m["digest"] for m in stmt["predicate"]["materials"]] == [{"sha256": base_digest[7:]}]
    return stmt


def test_a_push_carries_the_attestation_and_leaves_the_image_as_it_was(
        registry, busybox_image, project: Path, store: str, tmp_path: Path) -> None:
    write(project, {"Dockerfile": f"FROM {busybox_image.ref}\nARG GREETING\n"
                                  "RUN echo $GREETING > /greeting\n"})
    plain_out = tmp_path / "plain.tar"
    pybuild("build", "--root", store, "--build-arg", "GREETING=hi", "-o",
            f"type=oci,dest={plain_out}", str(project))
    with tarfile.open(plain_out) as tar:
        plain = json.load(tar.extractfile("index.json"))["manifests"][0]["digest"]  # type: ignore[arg-type]
    host, port = registry.host.split(":")
    name = f"{registry.host}/prov/app:1"
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    pybuild("build", "--root", store, "--build-arg", "GREETING=hi", "--provenance", "mode=max",
            "--push", "-t", name, "--iidfile", str(iid), "--metadata-file", str(meta), str(project))
    raw = _skopeo(registry, "inspect", "--raw", "--tls-verify=false", f"docker://{name}")
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    from hashlib import sha256

    index_digest = "sha256:" + sha256(raw).hexdigest()
    # what buildx names: the index, with no config digest beside it
    assert iid.read_text() == index_digest
    md = json.loads(meta.read_text())
    assert md["containerimage.digest"] == index_digest and "containerimage.config.digest" not in md
    assert md["containerimage.descriptor"]["mediaType"] == index["mediaType"]

    layout = tmp_path / "copied"
    _skopeo(registry, "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{name}",
            f"oci:{layout}:t")
    stmt = _check_attestation(index, lambda d: _layout_blob(layout, d), plain,
                              busybox_image.digest,
                              f"pkg:docker/{host}%3A{port}/prov/app@1?platform=linux%2F"
                              + index["manifests"][0]["platform"]["architecture"])
    params = stmt["predicate"]["invocation"]["parameters"]
    assert params["args"] == {"build-arg:GREETING": "hi"}  # mode=max keeps the build args
    assert stmt["predicate"]["materials"][0]["uri"].startswith(f"pkg:docker/{host}%3A{port}/busybox@")
    # the platform image a puller gets is the one built without provenance
    seen = json.loads(_skopeo(registry, "inspect", "--tls-verify=false", f"docker://{name}"))
    assert seen["Digest"] == index_digest
    by_digest = _skopeo(registry, "inspect", "--raw", "--tls-verify=false",
                        f"docker://{registry.host}/prov/app@{plain}")
    assert "sha256:" + sha256(by_digest).hexdigest() == plain
    # pybuild's own pull picks the platform image out of the index, never the attestation;
    # the material is the index the tag names, as BuildKit pins it, pulled or then stored
    write(project, {"Dockerfile": f"FROM {name}\nRUN cat /greeting\n"})
    for again in ("pulled", "stored"):
        pybuild("build", "--root", str(tmp_path / "fresh"), "--provenance", "mode=min", "-o",
                f"type=local,dest={tmp_path / again}", str(project))
        stmt = json.loads((tmp_path / again / "provenance.json").read_text())
        assert stmt["predicate"]["materials"] == [{
            "uri": f"pkg:docker/{host}%3A{port}/prov/app@1?platform=linux%2F{_arch()}",
            "digest": {"sha256": index_digest[7:]}}]


def test_an_oci_archive_holds_the_index_and_the_tools_read_it(
        registry, local_busybox: Path, project: Path, store: str, tmp_path: Path) -> None:
    bb = f"bb=oci-layout://{local_busybox}"
    write(project, {"Dockerfile": "FROM bb\nRUN echo built > /built\n"})
    plain_out, out = tmp_path / "plain.tar", tmp_path / "prov.tar"
    pybuild("build", "--root", store, "--build-context", bb, "-t", "app:1", "-o",
            f"type=oci,dest={plain_out}", str(project))
    pybuild("build", "--root", store, "--build-context", bb, "-t", "app:1",
            "--attest", "type=provenance,mode=min", "-o", f"type=oci,dest={out}", str(project))
    with tarfile.open(plain_out) as tar:
        plain = json.load(tar.extractfile("index.json"))["manifests"][0]["digest"]  # type: ignore[arg-type]
    with tarfile.open(out) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]
        (entry,) = json.load(tar.extractfile("index.json"))["manifests"]  # type: ignore[arg-type]
        assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
        stmt = _check_attestation(json.loads(blob(entry["digest"])), blob, plain, None,
                                  "pkg:docker/app@1?platform=linux%2F" + _arch())
        # docker load still finds the image in it
        (loadable,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert loadable["RepoTags"] == ["app:1"]
    assert stmt["predicate"]["materials"][0]["uri"].startswith("pkg:oci/")
    # mode=min: no build config; the parameters are complete, as no build arg was left out
    assert "buildConfig" not in stmt["predicate"]
    assert stmt["predicate"]["metadata"]["completeness"] == {
        "parameters": True, "environment": True, "materials": False}
    # skopeo reads the archive (and picks the platform image); umoci lists its tag and
    # unpacks the platform image skopeo copies out (umoci calls the index's tag ambiguous)
    info = json.loads(_skopeo(registry, "inspect", f"oci-archive:{out}:1"))
    assert info["Digest"] == entry["digest"] and info["Architecture"] == _arch()
    layout = tmp_path / "layout"
    _skopeo(registry, "copy", "--quiet", f"oci-archive:{out}:1", f"oci:{layout}:t")
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == ["t"]
    copied = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert copied == plain  # the platform image, unchanged
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:t", str(tmp_path / "bundle")],
                   capture_output=True, check=True)
    assert (tmp_path / "bundle/rootfs/built").read_text() == "built\n"


def _arch() -> str:
    from tests.fixtures.registry import host_arch

    return host_arch()


def test_local_and_tar_outputs_get_provenance_json_and_a_docker_archive_is_refused(
        project: Path, store: str, tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "hello\n"})
    local, tar_out = tmp_path / "local", tmp_path / "root.tar"
    pybuild("build", "--root", store, "--provenance", "true", "-o", f"type=local,dest={local}",
            str(project))
    stmt = json.loads((local / "provenance.json").read_text())
    from hashlib import sha256

    assert stmt["subject"] == [{"name": "hello.txt",
                                "digest": {"sha256": sha256(b"hello\n").hexdigest()}}]
    assert stmt["predicate"]["invocation"]["configSource"] == {"entryPoint": "Dockerfile"}
    pybuild("build", "--root", store, "--attest", "type=provenance,version=v1,filename=prov.json",
            "-o", f"type=tar,dest={tar_out}", str(project))
    with tarfile.open(tar_out) as tar:
        names = sorted(n.lstrip("./") for n in tar.getnames())
        stmt = json.load(tar.extractfile(next(m for m in tar.getmembers()
                                              if m.name.endswith("prov.json"))))  # type: ignore[arg-type]
    assert names == ["hello.txt", "prov.json"]
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    # inline-only: the folder gets no file
    again = tmp_path / "again"
    pybuild("build", "--root", store, "--provenance", "mode=max,inline-only=true", "-o",
            f"type=local,dest={again}", str(project))
    assert sorted(p.name for p in again.iterdir()) == ["hello.txt"]
    refused = pybuild("build", "--root", store, "--provenance", "true", "-o",
                      f"type=docker,dest={tmp_path / 'd.tar'}", str(project), check=False)
    assert refused.returncode == 2 and "#1" not in refused.stderr
    assert "docker exporter does not support exporting manifest lists" in refused.stderr


def test_each_platform_gets_its_attestation_in_the_one_index(
        project: Path, store: str, tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\nARG TARGETARCH\nCOPY hello.txt /$TARGETARCH\n",
                    "hello.txt": "hello\n"})
    out, local = tmp_path / "multi.tar", tmp_path / "local"
    pybuild("build", "--root", store, "--platform", "linux/amd64,linux/arm64", "--provenance",
            "true", "-t", "multi:1", "-o", f"type=oci,dest={out}", "-o",
            f"type=local,dest={local}", str(project))
    with tarfile.open(out) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]
        (entry,) = json.load(tar.extractfile("index.json"))["manifests"]  # type: ignore[arg-type]
        index = json.loads(blob(entry["digest"]))
        images, atts = index["manifests"][:2], index["manifests"][2:]
        assert [m["platform"]["architecture"] for m in images] == ["amd64", "arm64"]
        assert [a["annotations"]["vnd.docker.reference.digest"] for a in atts] == \
            [m["digest"] for m in images]
        for image, att in zip(images, atts):
            layer = json.loads(blob(att["digest"]))["layers"][0]
            stmt = json.loads(blob(layer["digest"]))
            arch = image["platform"]["architecture"]
            assert stmt["subject"] == [{"name": f"pkg:docker/multi@1?platform=linux%2F{arch}",
                                        "digest": {"sha256": image["digest"][7:]}}]
    for arch in ("amd64", "arm64"):
        stmt = json.loads((local / f"linux_{arch}/provenance.json").read_text())
        assert [s["name"] for s in stmt["subject"]] == [arch]


def test_an_uncompressed_image_is_pushed_as_its_index_names_it(
        registry, project: Path, store: str, tmp_path: Path) -> None:
    import requests

    write(project, {"Dockerfile": "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "hello\n"})
    name = f"{registry.host}/prov/raw:1"
    pybuild("build", "--root", store, "--compression", "uncompressed", "--provenance", "true",
            "--push", "-t", name, str(project))
    index = json.loads(_skopeo(registry, "inspect", "--raw", "--tls-verify=false", f"docker://{name}"))

    def blob(digest: str) -> bytes:  # manifests and blobs straight from the registry's API
        for kind in ("manifests", "blobs"):
            got = requests.get(f"{registry.url}/v2/prov/raw/{kind}/{digest}", timeout=10, headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"})
            if got.ok:
                return got.content
        raise AssertionError(f"{digest} was not pushed")
    image = json.loads(blob(index["manifests"][0]["digest"]))
    assert [d["mediaType"] for d in image["layers"]] == ["application/vnd.oci.image.layer.v1.tar"]
    host, port = registry.host.split(":")
    _check_attestation(index, blob, index["manifests"][0]["digest"], None,
                       f"pkg:docker/{host}%3A{port}/prov/raw@1?platform=linux%2F{_arch()}")
