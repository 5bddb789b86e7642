"""`docker buildx build` flags that CI scripts pass and that pybuild takes for what they mean
here: --load (the image in pybuild's own store), --provenance/--sbom/--attest turned off (and
provenance asked for where the store is the only output)."""
from __future__ import annotations

import os

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")


def _build(project: Project, *args: str, check: bool = True):
    """A build straight into the store (no -o), as `docker buildx build --load` users run it."""
    return runbuild.pybuild("build", "--root", str(project.store), "--progress", "plain", "-q",
                            *(a for c in project.contexts for a in ("--build-context", c)),
                            *args, str(project.root), check=check)


def _stored(project: Project, name: str) -> bool:
    return runbuild.pybuild("inspect", "--root", str(project.store), name, check=False).returncode == 0


def test_load_keeps_the_image_in_the_store(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN echo built > /built\n")
    plain = _build(project, "-t", "app:plain").stdout
    # without -o the image is stored anyway: --load changes nothing, not even the cache
    loaded = runbuild.pybuild("build", "--root", str(project.store), "--progress", "plain",
                              "--build-context", project.contexts[0], "-t", "app:loaded", "--load",
                              str(project.root))
    assert "(1/1 steps cached)" in loaded.stderr
    assert _stored(project, "app:loaded") and _stored(project, "app:plain")
    assert _build(project, "-t", "app:loaded", "--load").stdout == plain
    # beside an archive output, the image is stored too (as buildx loads it beside the others)
    project.build("-t", "app:archived")
    assert not _stored(project, "app:archived")
    project.build("-t", "app:archived", "--load")
    assert _stored(project, "app:archived")
    assert project.image().layer_digests  # and the archive is written as before


def test_attestations_off_change_nothing_and_the_store_keeps_the_image_alone(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN echo built > /built\n")
    plain = _build(project, "-t", "app:1").stdout
    off = _build(project, "-t", "app:1", "--provenance=false", "--sbom", "false",
                 "--attest", "type=sbom,disabled=true").stdout
    assert off == plain
    # the store keeps the image without its attestation, as docker's image store does
    assert _build(project, "-t", "app:1", "--provenance=mode=max").stdout == plain
    shown = runbuild.pybuild("build", "--root", str(project.store), "--progress", "plain",
                             "--build-context", project.contexts[0], "-t", "app:1",
                             "--provenance=true", str(project.root))
    assert "keeps the image without its attestation" in shown.stderr
    for refused, words in ((["--sbom=true"], "pybuild makes no SBOM attestation"),
                           (["--attest", "type=provenance", "-o", "type=docker,dest=x.tar"],
                            "docker exporter does not support exporting manifest lists")):
        done = _build(project, "-t", "app:2", *refused, check=False)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr
        assert done.stdout == ""
    assert not _stored(project, "app:2")
