"""SLSA provenance (builder.provenance, builder.attest, builder.oci.attestation): the
attestation flags read as buildx and BuildKit read them, package URLs as BuildKit writes
them, and the statement and attestation manifest made for a real image."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.buildflags import parse_attestations
from builder.digest import Digest, sha256_bytes
from builder.errors import UsageError
from builder.provenance import (
    PREDICATE_V02,
    PREDICATE_V1,
    Material,
    ProvenanceFacts,
    ProvenanceOptions,
    StepFact,
    predicate,
    purl,
)

OFF = [
    ((), "false", "false"), ((), "0", None), ((), None, "False"), ((), "", ""), ((), None, None),
    (("type=provenance,disabled=true", "type=sbom,disabled=1"), None, None),
    (("type=sbom",), None, "false"),  # the shorthand comes last and wins for its type
    (("type=provenance,mode=max",), "f", None),
    (("type=provenance", "type=provenance,disabled=true"), None, None),  # the last --attest wins
    (("type=sbom,generator=x", "type=sbom,disabled=true"), None, None),
]


@pytest.mark.parametrize("attests, provenance, sbom", OFF)
def test_attestations_turned_off_give_none(attests: tuple[str, ...], provenance: str | None,
                                           sbom: str | None) -> None:
    assert parse_attestations(attests, provenance, sbom) is None


@pytest.mark.parametrize("attests, provenance, expected", [
    ((), "true", ProvenanceOptions()),  # true is BuildKit's default mode: max, SLSA v0.2
    ((), "1", ProvenanceOptions()),
    ((), "mode=min", ProvenanceOptions(mode="min")),
    ((), "mode=max,version=v1", ProvenanceOptions(mode="max", version="v1")),
    (("type=provenance,mode=full",), None, ProvenanceOptions(mode="max")),
    (("type=provenance,disabled=true",), "true", ProvenanceOptions()),  # the shorthand is last
    (("TYPE=provenance,Disabled=false,mode=min",), None, ProvenanceOptions(mode="min")),
    ((("type=provenance,builder-id=https://ci/run/1,reproducible=true,filename=out/p.json,"
       "inline-only=1,unknown=kept"),), None,
     ProvenanceOptions(builder_id="https://ci/run/1", reproducible=True, filename="p.json",
                       inline_only=True)),
])
def test_provenance_asked_for_gives_its_options(attests: tuple[str, ...], provenance: str | None,
                                                expected: ProvenanceOptions) -> None:
    assert parse_attestations(attests, provenance, None) == expected


@pytest.mark.parametrize("attests, provenance, sbom, named, words", [
    ((), None, "true", "--sbom 'true'", "pybuild makes no SBOM attestation"),
    ((), None, "generator=docker/scout-sbom-indexer", "--sbom 'generator=", "no SBOM"),
    (("type=sbom",), "true", None, "--attest 'type=sbom'", "no SBOM"),
    (("type=spdx",), None, None, "--attest 'type=spdx'", "unknown attestation type 'spdx'"),
    ((), "mode=all", None, "invalid --provenance 'mode=all'", "invalid mode 'all'"),
    ((), "version=v2", None, "invalid --provenance", "invalid provenance SLSA version: v2"),
    ((), "reproducible=maybe", None, "invalid --provenance", "reproducible flag 'maybe'"),
    ((), "complete-materials=true", None, "--provenance", "provenance materials are incomplete"),
    (("disabled=true",), None, None, "invalid --attest", "the attestation type is not given"),
    (("type=sbom,disabled=maybe",), None, None, "invalid --attest", "disabled=maybe is not true"),
    (("type=provenance,junk",), None, None, "invalid --attest", "'junk' is not KEY=VALUE"),
])
def test_bad_or_impossible_attestations_are_usage_errors(
        attests: tuple[str, ...], provenance: str | None, sbom: str | None, named: str,
        words: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_attestations(attests, provenance, sbom)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(named)
    assert words in caught.value.message


DGST = str(sha256_bytes(b"test"))


@pytest.mark.parametrize("ref, platform, expected", [  # BuildKit's util/purl test cases
    ("alpine", None, "pkg:docker/alpine@latest"),
    ("library/alpine:3.15", None, "pkg:docker/alpine@3.15"),
    ("docker.io/library/alpine:latest", None, "pkg:docker/alpine@latest"),
    (f"docker.io/library/alpine:latest@{DGST}", None, f"pkg:docker/alpine@latest?digest={DGST}"),
    (f"docker.io/library/alpine@{DGST}", None, f"pkg:docker/alpine?digest={DGST}"),
    ("user/test:v2", None, "pkg:docker/user/test@v2"),
    ("ghcr.io/foo/bar", None, "pkg:docker/ghcr.io/foo/bar@latest"),
    ("busybox", "linux/amd64", "pkg:docker/busybox@latest?platform=linux%2Famd64"),
    (f"busybox@{DGST}", "linux/amd64", f"pkg:docker/busybox?digest={DGST}&platform=linux%2Famd64"),
    # a registry with a port, and platforms as containerd normalises them
    ("localhost:5000/team/app:v1", "linux/arm64/v8",
     "pkg:docker/localhost%3A5000/team/app@v1?platform=linux%2Farm64"),
    ("app", "linux/arm", "pkg:docker/app@latest?platform=linux%2Farm%2Fv7"),
])
def test_package_urls_are_buildkits(ref: str, platform: str | None, expected: str) -> None:
    assert purl(ref, platform) == expected


BASE = Digest.parse("sha256:" + "ab" * 32)


def _facts(**changes: object) -> ProvenanceFacts:
    values: dict = {
        "args": {"build-arg:TOKEN": "x", "label:team": "core", "target": "app",
                 "filename": "Dockerfile.app"},
        "dockerfile_name": "Dockerfile.app", "dockerfile": b"FROM busybox\nRUN true\n",
        "materials": (Material("docker.io/library/busybox:latest", "linux/amd64", BASE),),
        "locals": ("context", "dockerfile"), "builder_platform": "linux/amd64",
        "started": "2026-01-02T03:04:05.5Z", "finished": "2026-01-02T03:04:06Z",
        "invocation": "x" * 25, "secrets": (("npmrc", True),),
        "steps": (StepFact("sha256:" + "01" * 32, "stage-0", "RUN true", 2),)}
    values.update(changes)
    return ProvenanceFacts(**values)


def test_a_max_v02_predicate_has_buildkits_fields_in_its_order() -> None:
    body = predicate(ProvenanceOptions(), _facts())
    assert list(body) == ["builder", "buildType", "materials", "invocation", "buildConfig", "metadata"]
    assert body["builder"] == {"id": ""}
    assert body["buildType"] == "https://mobyproject.org/buildkit@v1"
    assert body["materials"] == [{"uri": "pkg:docker/busybox@latest?platform=linux%2Famd64",
                                  "digest": {"sha256": "ab" * 32}}]
    invocation = body["invocation"]
    assert invocation["configSource"] == {"entryPoint": "Dockerfile.app"}
    assert invocation["parameters"] == {
        "frontend": "dockerfile.v0",
        "args": {"build-arg:TOKEN": "x", "label:team": "core", "target": "app"},
        "secrets": [{"id": "npmrc", "optional": True}],
        "locals": [{"name": "context"}, {"name": "dockerfile"}]}
    assert invocation["environment"] == {"platform": "linux/amd64"}
    assert body["buildConfig"]["llbDefinition"][0]["id"] == "step0"
    assert body["buildConfig"]["digestMapping"] == {"sha256:" + "01" * 32: "step0"}
    meta = body["metadata"]
    assert meta["buildStartedOn"] == "2026-01-02T03:04:05.5Z"
    assert meta["completeness"] == {"parameters": True, "environment": True, "materials": False}
    assert meta["reproducible"] is False
    source = meta["https://mobyproject.org/buildkit@v1#metadata"]["source"]
    assert source["infos"][0]["filename"] == "Dockerfile.app"
    assert source["locations"]["step0"]["locations"][0]["ranges"][0]["start"] == {"line": 2}
    assert "https://mobyproject.org/buildkit@v1#hermetic" not in meta  # a local context


def test_min_mode_leaves_out_args_labels_secrets_and_says_so() -> None:
    body = predicate(ProvenanceOptions(mode="min"), _facts())
    assert "buildConfig" not in body
    assert body["invocation"]["parameters"] == {
        "frontend": "dockerfile.v0", "args": {"target": "app"},
        "locals": [{"name": "context"}, {"name": "dockerfile"}]}
    assert body["metadata"]["completeness"]["parameters"] is False
    assert body["metadata"]["https://mobyproject.org/buildkit@v1#metadata"] == {}


def test_a_v1_predicate_has_build_definition_and_run_details() -> None:
    body = predicate(ProvenanceOptions(version="v1", builder_id="ci", reproducible=True), _facts())
    definition = body["buildDefinition"]
    assert list(definition) == ["buildType", "resolvedDependencies", "externalParameters",
                                "internalParameters"]
    assert definition["externalParameters"]["configSource"] == {"path": "Dockerfile.app"}
    assert list(definition["internalParameters"]) == ["buildConfig", "builderPlatform"]
    assert definition["resolvedDependencies"][0]["digest"] == {"sha256": "ab" * 32}
    run = body["runDetails"]
    assert run["builder"] == {"id": "ci"}
    assert run["metadata"]["buildkit_completeness"] == {"request": True, "resolvedDependencies": False}
    assert run["metadata"]["buildkit_reproducible"] is True


def test_the_statement_names_the_real_manifest_and_its_manifest_is_buildkits(tmp_path: Path) -> None:
    from builder.attest import for_image
    from builder.oci.image import IndexSpec, build_image
    from builder.oci.types import Descriptor, ImageConfig

    layer = tmp_path / "layer"
    layer.write_bytes(b"not really a tar")
    config = ImageConfig.from_json({"architecture": "amd64", "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": [str(BASE)]}})
    image = build_image(config, [(Descriptor("application/vnd.oci.image.layer.v1.tar",
                                             sha256_bytes(b"not really a tar"), 16), layer)],
                        blob_dir=tmp_path / "blobs")
    before = image.manifest_bytes
    att = for_image(ProvenanceOptions(), _facts(), image, ["localhost:5000/app:1"], "linux/amd64",
                    blob_dir=tmp_path / "blobs")
    assert image.manifest_bytes == before  # the image itself is untouched
    (desc,) = att.manifest.layers
    assert desc.media_type == "application/vnd.in-toto+json"
    assert desc.annotations == {"in-toto.io/predicate-type": PREDICATE_V02}
    stmt = json.loads((tmp_path / "blobs/sha256" / desc.digest.hex).read_bytes())
    assert stmt["_type"] == "https://in-toto.io/Statement/v0.1"
    assert stmt["predicateType"] == PREDICATE_V02
    assert stmt["subject"] == [{"name": "pkg:docker/localhost%3A5000/app@1?platform=linux%2Famd64",
                                "digest": {"sha256": image.manifest_digest.hex}}]
    assert stmt["predicate"]["materials"][0]["digest"] == {"sha256": BASE.hex}
    assert json.loads(att.config_bytes) == {
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(desc.digest)]}}
    from builder.oci.attestation import entry_annotations

    index = json.loads(IndexSpec.of([image, att], entries={
        att.manifest_digest: entry_annotations(image.manifest_digest)}).manifest_bytes)
    assert [m["digest"] for m in index["manifests"]] == [str(image.manifest_digest),
                                                         str(att.manifest_digest)]
    assert index["manifests"][1]["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert index["manifests"][1]["annotations"] == {
        "vnd.docker.reference.digest": str(image.manifest_digest),
        "vnd.docker.reference.type": "attestation-manifest"}


def test_without_a_name_the_subject_list_is_empty_as_in_buildkit(tmp_path: Path) -> None:
    from builder.attest import image_subjects

    assert image_subjects([], "linux/amd64", BASE) == []
    assert image_subjects(["a:1", "b"], "linux/amd64", BASE) == [
        ("pkg:docker/a@1?platform=linux%2Famd64", BASE),
        ("pkg:docker/b@latest?platform=linux%2Famd64", BASE)]


def test_the_provenance_file_names_every_file_of_the_output(tmp_path: Path) -> None:
    from builder.attest import write_file

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_bytes(b"tool")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "link").symlink_to("a")
    write_file(ProvenanceOptions(version="v1"), _facts(), tmp_path, mtime=5)
    path = tmp_path / "provenance.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_mtime == 5
    stmt = json.loads(path.read_text())
    assert stmt["predicateType"] == PREDICATE_V1
    assert stmt["subject"] == [{"name": "a", "digest": {"sha256": sha256_bytes(b"a").hex}},
                               {"name": "bin/tool", "digest": {"sha256": sha256_bytes(b"tool").hex}}]
    assert path.read_text().startswith('{\n  "_type"')  # indented, as BuildKit writes it
