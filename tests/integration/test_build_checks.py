"""The build checks as `pybuild build` users see them: the warnings while building, the
summary at the end, `check=error=true` failing the build, `--check` (report and exit
status), stdout kept for data, and the warnings of a fully cached rebuild (replayed)."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import PYBUILD, pybuild, write
from tests.integration.test_warm_replay import build, settle

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

CASING = "'as' and 'FROM' keywords' casing do not match"
JSON_ARGS = ("JSON arguments recommended for CMD to prevent unintended behavior related to OS "
             "signals")
DOCKERFILE = "FROM scratch as base\nCOPY a.txt /\nCMD run-it\n"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n"})


def test_a_build_shows_the_warnings_then_sums_them_up(ctx: Path, tmp_path: Path) -> None:
    done = pybuild("build", "--root", str(tmp_path / "store"), "--progress", "plain", str(ctx))
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[:2] == [f"WARN: FromAsCasing: {CASING} (line 1)",
                         f"WARN: JSONArgsRecommended: {JSON_ARGS} (line 3)"]
    summary = lines.index(" 2 warnings found (use pybuild --debug to expand):")
    assert lines[summary + 1:summary + 3] == [f" - FromAsCasing: {CASING} (line 1)",
                                              f" - JSONArgsRecommended: {JSON_ARGS} (line 3)"]
    assert lines[summary + 3].startswith("built image sha256:")

    # --debug expands each: the rule's description, its page, the lines around it
    done = pybuild("--debug", "build", "--root", str(tmp_path / "store"), "--progress", "plain",
                   str(ctx))
    assert ("\n 2 warnings found:\n"
            f" - FromAsCasing: {CASING} (line 1)\n"
            "The 'as' keyword should match the case of the 'from' keyword\n"
            "More info: https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
            "Dockerfile:1\n--------------------\n"
            "   1 | >>> FROM scratch as base\n") in done.stderr


def test_stdout_carrying_data_gets_no_warnings(ctx: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    quiet = pybuild("build", "--root", store, "-q", str(ctx))
    assert quiet.stdout.startswith("sha256:") and len(quiet.stdout.split()) == 1
    assert "WARN" not in quiet.stderr and "warning" not in quiet.stderr  # quiet: as buildx

    proc = subprocess.run([*PYBUILD, "build", "--root", store, "--progress", "plain", "-o", "-",
                           str(ctx)], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:  # the tar, whole
        assert "a.txt" in tar.getnames()
    assert f"WARN: FromAsCasing: {CASING} (line 1)" in proc.stderr.decode()


def test_error_true_fails_the_build_before_any_step(ctx: Path, tmp_path: Path) -> None:
    (ctx / "Dockerfile").write_text("# check=error=true\n" + DOCKERFILE)
    failed = pybuild("build", "--root", str(tmp_path / "store"), "--progress", "plain", str(ctx),
                     check=False)
    assert failed.returncode == 1
    err = failed.stderr
    assert f"WARN: FromAsCasing: {CASING} (line 2)" in err
    assert ("Dockerfile:2: lint violation found for rules: FromAsCasing, JSONArgsRecommended\n"
            " 2 | FROM scratch as base\n") in err
    assert " 2 warnings found" in err and err.index(" 2 warnings found") < err.index("lint violation")
    assert "COPY" not in err and "built " not in err  # nothing ran

    # the build arg replaces the directive: these rules skipped, nothing to fail on
    passed = pybuild("build", "--root", str(tmp_path / "store"), "--progress", "plain",
                     "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing,JSONArgsRecommended",
                     str(ctx))
    assert "WARN" not in passed.stderr and "built image" in passed.stderr
    assert "not consumed" not in passed.stderr  # the build arg is the checks', not unused


def test_check_prints_the_report_and_builds_nothing(ctx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = pybuild("build", "--check", "--root", str(store), str(ctx), check=False)
    assert done.returncode == 1
    assert done.stdout == (
        "Check complete, 2 warnings have been found!\n"
        "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
        f"{CASING}\n"
        "Dockerfile:1\n--------------------\n"
        "   1 | >>> FROM scratch as base\n"
        "   2 |     COPY a.txt /\n"
        "   3 |     CMD run-it\n"
        "--------------------\n"
        "\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
        f"{JSON_ARGS}\n"
        "Dockerfile:3\n--------------------\n"
        "   1 |     FROM scratch as base\n"
        "   2 |     COPY a.txt /\n"
        "   3 | >>> CMD run-it\n"
        "   4 |     \n"
        "--------------------\n")
    assert not (store / "images").exists() or not any((store / "images").iterdir())

    # without --target every stage is checked; with one, only what it needs
    (ctx / "Dockerfile").write_text("FROM scratch AS a\nENV k v\nFROM scratch AS b\n")
    every = pybuild("build", "--check", "--root", str(store), str(ctx), check=False)
    assert every.returncode == 1 and "WARNING: LegacyKeyValueFormat" in every.stdout
    only_b = pybuild("build", "--check", "--target", "b", "--root", str(store), str(ctx))
    assert only_b.stdout == "Check complete, no warnings found.\n"

    (ctx / "Dockerfile").write_text("# check=error=true\nFROM scratch AS a\nENV k v\n")
    failed = pybuild("build", "--check", "--root", str(store), str(ctx), check=False)
    assert failed.returncode == 1 and failed.stdout.endswith("--------------------\n\n")
    assert "Dockerfile:3: lint violation found for rules: LegacyKeyValueFormat" in failed.stderr


def test_a_replayed_build_shows_the_warnings_too(ctx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    settle(ctx)
    build(store, ctx, "--progress=plain")
    replayed, _, shown = build(store, ctx, "--progress=plain")
    assert replayed
    assert f"WARN: FromAsCasing: {CASING} (line 1)" in shown
    assert f"\n 2 warnings found (use pybuild --debug to expand):\n - FromAsCasing: {CASING}" in shown

    # another # check= is another Dockerfile: built again, with its own findings
    (ctx / "Dockerfile").write_text("# check=skip=FromAsCasing\n" + DOCKERFILE)
    settle(ctx)
    replayed, _, shown = build(store, ctx, "--progress=plain")
    assert not replayed and "FromAsCasing" not in shown and "1 warning found" in shown
    replayed, _, shown = build(store, ctx, "--progress=plain")
    assert replayed and "1 warning found" in shown
    # the build arg too
    replayed, _, shown = build(store, ctx, "--progress=plain",
                               "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all")
    assert not replayed and "WARN" not in shown and "warning" not in shown


def test_base_image_platform_and_environment(tmp_path: Path, registry, multiarch_image) -> None:
    # a tag holding one image, for the other architecture: a registry serves it whatever
    # platform is asked for, and BuildKit warns that it does not fit
    registry.push_layout(multiarch_image.layout, "fake", "single-other:1")
    from builder.graph import platform_args

    host = platform_args()["TARGETPLATFORM"]
    other = "linux/arm64" if host != "linux/arm64" else "linux/amd64"
    image = f"{registry.host}/single-other:1"
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {image}\nENV PATH=$PAHT:/opt/bin\n"})
    done = pybuild("build", "--root", str(tmp_path / "store"), "--progress", "plain", str(ctx))
    assert (f'WARN: InvalidBaseImagePlatform: Base image {image} was pulled with platform '
            f'"{other}", expected "{host}" for current build (line 1)') in done.stderr
    # the base image's environment is known: PATH is defined, PAHT is not
    assert ("WARN: UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) "
            "(line 2)") in done.stderr


def test_call_targets_lists_the_stages_and_call_check_is_check(ctx: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    (ctx / "Dockerfile").write_text(
        "# deps fetches what the app needs\nFROM scratch AS deps\n\n"
        "# app is the image that ships\nFROM deps AS app\nCOPY a.txt /\n")
    listed = pybuild("build", "--call", "targets", "--root", str(store), str(ctx))
    assert listed.stdout == ("TARGET        DESCRIPTION\n"
                             "deps          fetches what the app needs\n"
                             "app (default) is the image that ships\n")
    assert not (store / "images").exists() or not any((store / "images").iterdir())

    (ctx / "Dockerfile").write_text(DOCKERFILE)
    checked = pybuild("build", "--call=check", "--root", str(store), str(ctx), check=False)
    assert checked.returncode == 1 and checked.stdout.startswith(
        "Check complete, 2 warnings have been found!\n")

    outline = pybuild("build", "--call", "outline", "--root", str(store), str(ctx), check=False)
    assert outline.returncode == 2 and "Traceback" not in outline.stderr
    assert "--call outline is not implemented by pybuild" in outline.stderr
