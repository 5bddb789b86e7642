"""Building for another platform (--platform, FROM --platform): the platform build args, base
images resolved for the platform from a real index, image configs as BuildKit writes them,
and RUN steps of another architecture through the kernel's emulator (qemu-user-static in
binfmt_misc) or, without one, an error that says what to install."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write
from tests.fixtures.crossarch import _fetch_busybox, emulator
from tests.fixtures.registry import host_arch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

_UNAME = {"amd64": "x86_64", "arm64": "aarch64"}


def _config(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return json.loads(blob(manifest["config"]["digest"]))


def _build(project: Path, store: str, tmp_path: Path, name: str, *args: str, check: bool = True,
           env: dict[str, str] | None = None):
    out = tmp_path / name
    done = pybuild("build", "--root", store, "--progress", "plain", *args, "-o",
                   f"type=oci,dest={out}.tar", str(project), check=check, env=env)
    if done.returncode == 0:
        pybuild("build", "--root", store, *args, "-o", f"type=local,dest={out}", str(project), env=env)
    return done, out


def _cross_compiling(base: str, args: str, run: str, copied: str) -> str:
    """The cross-compiling pattern: a stage on the build platform, the result copied onto the
    target platform's base."""
    return (f"FROM --platform=$BUILDPLATFORM {base} AS build\nARG {args}\nRUN {run}\n"
            f"FROM {base}\nCOPY --from=build {copied} /\n")


def test_cross_compiling_stage_runs_here_and_the_image_is_for_the_target(
        cross_image, project: Path, store: str, tmp_path: Path) -> None:
    other, here = cross_image.other, host_arch()
    write(project, {"Dockerfile": _cross_compiling(
        cross_image.ref, "TARGETPLATFORM TARGETARCH BUILDPLATFORM",
        'echo "$BUILDPLATFORM $TARGETPLATFORM $TARGETARCH" > /out && uname -m > /uname',
        "/out /uname")})
    done, out = _build(project, store, tmp_path, "x", "--platform", f"linux/{other}")
    assert (out / "out").read_text() == f"linux/{here} linux/{other} {other}\n"
    assert (out / "uname").read_text() == _UNAME[here] + "\n"  # the build stage ran natively
    # the final stage's base is the other architecture's image of the index
    assert (out / "bin/busybox").read_bytes() == _fetch_busybox(other).read_bytes()
    config = _config(out.with_suffix(".tar"))
    assert (config["os"], config["architecture"]) == ("linux", other)
    assert f"[stage-1 1/2] FROM {cross_image.ref}" in done.stderr

    # the image stored under a name is used for a build for its platform (docker.io, which
    # holds no such name and is not reachable, is not asked)
    pybuild("build", "--root", store, "--platform", f"linux/{other}", "-t", "crossapp:1", str(project))
    write(project, {"Dockerfile": "FROM crossapp:1\nCOPY Dockerfile /again\n"})
    _, again = _build(project, store, tmp_path, "again", "--platform", f"linux/{other}")
    assert (again / "out").read_text() == f"linux/{here} linux/{other} {other}\n"


def test_run_steps_of_the_other_architecture_go_through_the_emulator(
        cross_image, project: Path, store: str, tmp_path: Path) -> None:
    other = cross_image.other
    if not emulator(other):
        pytest.skip(f"no emulator for {other} is registered in binfmt_misc (qemu-user-static)")
    write(project, {"Dockerfile": f"FROM {cross_image.ref}\nRUN uname -m > /uname\n"})
    _, there = _build(project, store, tmp_path, "there", "--platform", f"linux/{other}")
    assert (there / "uname").read_text() == _UNAME[other] + "\n"
    # the same Dockerfile for this machine is another step, not the cached one
    _, here = _build(project, store, tmp_path, "here")
    assert (here / "uname").read_text() == _UNAME[host_arch()] + "\n"
    assert _config(there.with_suffix(".tar"))["architecture"] == other
    assert _config(here.with_suffix(".tar"))["architecture"] == host_arch()


def test_without_an_emulator_the_step_says_what_to_install(cross_image, project: Path, store: str,
                                                           tmp_path: Path) -> None:
    other = cross_image.other
    write(project, {"Dockerfile": f"FROM {cross_image.ref}\nRUN uname -m > /uname\n"})
    done, _ = _build(project, store, tmp_path, "x", "--platform", f"linux/{other}", check=False,
                     env={"PYBUILD_BINFMT_MISC": str(tmp_path / "no-binfmt")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Dockerfile:2" in done.stderr
    assert f"cannot run a step for linux/{other}" in done.stderr
    assert "binfmt_misc is not mounted" in done.stderr and "qemu-user-static" in done.stderr


def test_from_platform_pulls_that_platform_and_the_image_keeps_it(
        cross_image, project: Path, store: str, tmp_path: Path) -> None:
    other = cross_image.other
    write(project, {"Dockerfile": f"FROM --platform=linux/{other} {cross_image.ref}\n"})
    _, out = _build(project, store, tmp_path, "x")
    assert (out / "bin/busybox").read_bytes() == _fetch_busybox(other).read_bytes()
    # no --platform: the image's platform is its base's, as BuildKit keeps it
    assert _config(out.with_suffix(".tar"))["architecture"] == other


@pytest.mark.parametrize(("platform", "expected"), [
    ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/arm64", {"os": "linux", "architecture": "arm64"}),
    ("armhf", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/riscv64", {"os": "linux", "architecture": "riscv64"}),
])
def test_a_scratch_image_is_for_the_platform_asked(project: Path, store: str, tmp_path: Path,
                                                   platform: str, expected: dict) -> None:
    write(project, {"Dockerfile": "FROM scratch\nARG TARGETPLATFORM\nCOPY a /a\nLABEL p=$TARGETPLATFORM\n",
                    "a": "a\n"})
    _, out = _build(project, store, tmp_path, "x", "--platform", platform)
    config = _config(out.with_suffix(".tar"))
    assert {k: config[k] for k in ("os", "architecture", "variant") if k in config} == expected
    shown = "/".join([expected["os"], expected["architecture"]] +
                     ([expected["variant"]] if "variant" in expected else []))
    assert config["config"]["Labels"] == {"p": shown}


def test_bad_platforms_are_named(project: Path, store: str, tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\n"})
    empty = pybuild("build", "--root", store, "--platform", "linux/arm64,", str(project), check=False)
    assert empty.returncode == 2 and "--platform linux/arm64,: an empty platform" in empty.stderr
    unknown = pybuild("build", "--root", store, "--platform", "nosuch", str(project), check=False)
    assert unknown.returncode == 2
    assert "--platform: 'nosuch': unknown operating system or architecture" in unknown.stderr
    write(project, {"Dockerfile": "ARG A\nFROM --platform=linux/${A} scratch\nCOPY Dockerfile /\n"})
    bad = pybuild("build", "--root", store, str(project), check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "Dockerfile:2" in bad.stderr and "failed to parse platform linux/" in bad.stderr


def test_several_platforms_make_one_index(cross_image, registry, project: Path, store: str,
                                          tmp_path: Path) -> None:
    other, here = cross_image.other, host_arch()
    write(project, {"Dockerfile": _cross_compiling(cross_image.ref, "TARGETARCH",
                                                   "echo $TARGETARCH > /out", "/out")})
    out, iid, meta = tmp_path / "x.tar", tmp_path / "iid", tmp_path / "meta.json"
    name = f"{registry.host}/multi/app:1"
    done = pybuild("build", "--root", store, "--progress", "plain", "--platform",
                   f"linux/{here},linux/{other}", "-o", f"type=oci,dest={out}", "-o",
                   f"type=local,dest={tmp_path / 'local'}", "--iidfile", str(iid),
                   "--metadata-file", str(meta), "--push", "-t", name, str(project))
    # each platform's files in its own folder, as BuildKit splits them
    for arch in (here, other):
        assert (tmp_path / f"local/linux_{arch}/out").read_text() == f"{arch}\n"
    assert (tmp_path / f"local/linux_{other}/bin/busybox").read_bytes() == \
        _fetch_busybox(other).read_bytes()
    assert f"[linux/{other} stage-1 1/2] FROM {cross_image.ref}" in done.stderr
    # a stage that cross-compiles shows both platforms, as BuildKit shows it
    assert f"[linux/{here}->{other} build 2/2] RUN echo {other} > /out" in done.stderr
    assert f"[linux/{here} build 2/2] RUN echo {here} > /out" in done.stderr
    # the archive's one entry is the index, which lists both images with their platforms
    with tarfile.open(out) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]
        [entry] = json.load(tar.extractfile("index.json"))["manifests"]  # type: ignore[arg-type]
        assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
        index_bytes = blob(entry["digest"])
        index = json.loads(index_bytes)
        assert [m["platform"]["architecture"] for m in index["manifests"]] == [here, other]
        for m in index["manifests"]:
            config = json.loads(blob(json.loads(blob(m["digest"]))["config"]["digest"]))
            assert config["architecture"] == m["platform"]["architecture"]
    assert iid.read_text() == entry["digest"]
    assert json.loads(meta.read_text())["containerimage.digest"] == entry["digest"]
    # what was pushed is that index; a puller for the other platform gets its image
    pushed = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
                            capture_output=True, check=True).stdout
    assert pushed == index_bytes
    seen = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--override-arch", other,
                           f"docker://{name}"], capture_output=True, text=True, check=True).stdout
    assert json.loads(seen)["Architecture"] == other


def test_several_platforms_refuse_outputs_that_hold_one(project: Path, store: str,
                                                       tmp_path: Path) -> None:
    write(project, {"Dockerfile": "FROM scratch\nCOPY Dockerfile /\n"})
    both = "linux/amd64,linux/arm64"
    for args in (["-t", "app:1"], ["-o", f"type=docker,dest={tmp_path / 'd.tar'}"]):
        done = pybuild("build", "--root", store, "--platform", both, *args, str(project), check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "docker exporter does not currently support exporting manifest lists" in done.stderr
        assert "#1" not in done.stderr  # refused before any step
    twice = pybuild("build", "--root", store, "--platform", "linux/arm64,linux/aarch64", str(project),
                    check=False)
    assert twice.returncode == 2 and "--platform names linux/arm64 twice" in twice.stderr


def test_pybuild_run_of_an_image_for_another_platform(cross_image, project: Path, store: str,
                                                     tmp_path: Path) -> None:
    other = cross_image.other
    write(project, {"Dockerfile": f"FROM --platform=linux/{other} {cross_image.ref}\n"})
    pybuild("build", "--root", store, "-t", "foreign:1", str(project))
    # pybuild pull --platform names that platform's image, as docker pull --platform does
    pybuild("pull", "--root", str(tmp_path / "s2"), "--platform", f"linux/{other}", cross_image.ref)
    [shown] = json.loads(pybuild("inspect", "--root", str(tmp_path / "s2"), cross_image.ref).stdout)
    assert shown["Config"]["architecture"] == other
    refused = pybuild("run", "--root", store, "--rm", "foreign:1", "uname", "-m", check=False,
                      env={"PYBUILD_BINFMT_MISC": str(tmp_path / "none")})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"cannot run foreign:1, an image for linux/{other}: " in refused.stderr
    assert "qemu-user-static" in refused.stderr
    if not emulator(other):
        pytest.skip(f"no emulator for {other} is registered in binfmt_misc (qemu-user-static)")
    ran = pybuild("run", "--root", store, "--rm", "foreign:1", "uname", "-m")
    assert ran.stdout == _UNAME[other] + "\n"
    assert f"The requested image's platform (linux/{other}) does not match" in ran.stderr


def test_several_platforms_share_one_exported_cache(cross_image, project: Path, tmp_path: Path) -> None:
    other, here = cross_image.other, host_arch()
    write(project, {"Dockerfile": _cross_compiling(cross_image.ref, "TARGETARCH",
                                                   "echo $TARGETARCH > /out", "/out")})
    both = f"linux/{here},linux/{other}"
    cache = tmp_path / "cache"
    pybuild("build", "--root", str(tmp_path / "s1"), "--platform", both, "--cache-to",
            f"type=local,dest={cache},mode=max", "-o", f"type=oci,dest={tmp_path / 'a.tar'}",
            str(project))
    # a machine that starts empty gets every step of both platforms from that cache
    meta = tmp_path / "meta.json"
    pybuild("build", "--root", str(tmp_path / "s2"), "--platform", both, "--cache-from",
            f"type=local,src={cache}", "-o", f"type=local,dest={tmp_path / 'local'}",
            "--metadata-file", str(meta), str(project))
    steps = json.loads(meta.read_text())["pybuild.steps"]
    assert len(steps) == 4 and all(s["cached"] for s in steps), steps
    assert (tmp_path / f"local/linux_{other}/out").read_text() == f"{other}\n"


def test_a_stored_image_for_this_machine_only_is_named_when_another_is_needed(
        busybox_rootfs: Path, project: Path, store: str) -> None:
    pybuild("import", "--root", store, str(busybox_rootfs), "bb:1")
    other = "amd64" if host_arch() == "arm64" else "arm64"
    write(project, {"Dockerfile": "FROM bb:1\nCOPY Dockerfile /\n"})
    failed = pybuild("build", "--root", store, "--platform", f"linux/{other}", str(project),
                     check=False, env={"PYBUILD_REGISTRY_MAX_BACKOFF": "0.05"})
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert (f"the local store has bb:1 for linux/{host_arch()} only, and the build needs it for "
            f"linux/{other}") in failed.stderr


def test_an_imported_root_filesystem_can_be_for_another_platform(busybox_rootfs: Path, project: Path,
                                                                 store: str, tmp_path: Path) -> None:
    other = "amd64" if host_arch() == "arm64" else "arm64"
    pybuild("import", "--root", store, "--platform", f"linux/{other}", str(busybox_rootfs), "bb:other")
    [shown] = json.loads(pybuild("inspect", "--root", store, "bb:other").stdout)
    assert (shown["Config"]["os"], shown["Config"]["architecture"]) == ("linux", other)
    # and an air-gapped build for that platform finds it in the store
    write(project, {"Dockerfile": "FROM bb:other\nCOPY Dockerfile /\n"})
    _, out = _build(project, store, tmp_path, "x", "--platform", f"linux/{other}")
    assert (out / "Dockerfile").is_file() and _config(out.with_suffix(".tar"))["architecture"] == other


def test_an_image_named_by_from_is_read_for_the_target_platform(cross_image, project: Path,
                                                                store: str, tmp_path: Path) -> None:
    other = cross_image.other
    # even in a stage built for this machine, as BuildKit makes --from an implicit stage of
    # the target platform
    write(project, {"Dockerfile": (
        "FROM --platform=$BUILDPLATFORM scratch\n"
        f"COPY --from={cross_image.ref} /bin/busybox /copied\n")})
    _, out = _build(project, store, tmp_path, "x", "--platform", f"linux/{other}")
    assert (out / "copied").read_bytes() == _fetch_busybox(other).read_bytes()


def test_the_platforms_of_one_build_are_built_side_by_side(cross_image, project: Path, store: str,
                                                           tmp_path: Path) -> None:
    # Each platform's RUN waits for the other's to start, meeting in a shared cache mount:
    # built one after the other, the first would give up after 10 s and fail the build.
    other, here = cross_image.other, host_arch()
    meet = ('touch /c/$TARGETARCH; n=0; until [ -e /c/amd64 ] && [ -e /c/arm64 ]; do sleep 0.1; '
            'n=$((n+1)); [ $n -lt 100 ] || exit 1; done; echo met > /out')
    write(project, {"Dockerfile": _cross_compiling(cross_image.ref, "TARGETARCH",
                                                   f"--mount=type=cache,target=/c,id=meet {meet}", "/out")})
    pybuild("build", "--root", store, "--progress", "plain", "--platform", f"linux/{here},linux/{other}",
            "-o", f"type=local,dest={tmp_path / 'out'}", str(project))
    for arch in (here, other):
        assert (tmp_path / f"out/linux_{arch}/out").read_text() == "met\n"
    # --jobs 1 builds them in turn (and the rendezvous cannot happen)
    failed = pybuild("build", "--root", store, "--no-cache", "--jobs", "1", "--platform",
                     f"linux/{here},linux/{other}", "-o", f"type=local,dest={tmp_path / 'seq'}",
                     str(project), check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "failed: exit code 1" in failed.stderr
