"""ARG semantics as BuildKit has them, seen from outside: what RUN's environment holds, what the
image config and history record, and docker's warning for build args nobody used."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.buildtools import oci_config, pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _build(store: str, local_busybox: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pybuild build` with the busybox layout as the named context `base`."""
    return pybuild("build", "--root", store, "--build-context", f"base=oci-layout://{local_busybox}",
                   *args)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def test_arg_scopes_defaults_overrides_and_env(project: Path, store: str, local_busybox: Path,
                                               tmp_path: Path) -> None:
    write(project, {"Dockerfile": (
        "ARG GLOBAL=gdefault\n"
        "ARG FROMCLI\n"
        "ARG UNSEEN=never-declared-in-stage\n"
        "ARG TAG=latest\n"
        "FROM --platform=$BUILDPLATFORM base AS first\n"
        # re-declared without a value: inherits the global one; build-arg beats a default
        "ARG GLOBAL\n"
        "ARG FROMCLI\n"
        "ARG LOCAL=ldefault\n"
        "ARG OVERRIDDEN=odefault\n"
        "ARG TARGETARCH\n"
        "ARG DERIVED=${LOCAL}-x\n"
        # ENV after ARG wins, in RUN and in the config
        "ARG SHADOW=from-arg\n"
        "ENV SHADOW=from-env\n"
        "ENV FROM_ARG=$LOCAL\n"
        "RUN env > /env.txt\n")})
    out = tmp_path / "rootfs"
    meta = tmp_path / "oci.tar"
    pybuild("build", "--root", store, "--build-context", f"base=oci-layout://{local_busybox}:latest",
           "--build-arg", "OVERRIDDEN=cli", "--build-arg", "FROMCLI",
           "-o", f"type=local,dest={out}", "-o", f"type=oci,dest={meta}", str(project),
            env={"FROMCLI": "from environment"})
    env = _env_file(out / "env.txt")
    assert env["GLOBAL"] == "gdefault"
    assert env["FROMCLI"] == "from environment"  # `--build-arg NAME` takes the value from the env
    assert env["LOCAL"] == "ldefault"
    assert env["OVERRIDDEN"] == "cli"
    assert env["TARGETARCH"] == ARCH
    assert env["DERIVED"] == "ldefault-x"
    assert env["SHADOW"] == "from-env"
    # not declared in the stage: not in RUN's environment, even predefined or global ones
    for name in ("UNSEEN", "TAG", "TARGETPLATFORM", "BUILDPLATFORM", "TARGETOS"):
        assert name not in env, name

    cfg = oci_config(f"oci-archive:{meta}")
    # ARG values never reach the image config; ENV does
    assert cfg["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "SHADOW=from-env", "FROM_ARG=ldefault"]
    history = [h["created_by"] for h in cfg["history"]][1:]
    assert history == [
        "ARG GLOBAL=gdefault",
        "ARG FROMCLI=from environment",
        "ARG LOCAL=ldefault",
        "ARG OVERRIDDEN=cli",
        f"ARG TARGETARCH={ARCH}",
        "ARG DERIVED=ldefault-x",
        "ARG SHADOW=from-arg",
        "ENV SHADOW=from-env",
        "ENV FROM_ARG=ldefault",
        # RUN's history names the args the stage declared, with the values RUN saw
        "RUN |7 GLOBAL=gdefault FROMCLI=from environment LOCAL=ldefault OVERRIDDEN=cli "
        f"TARGETARCH={ARCH} DERIVED=ldefault-x SHADOW=from-env /bin/sh -c env > /env.txt # buildkit",
    ]


def test_global_args_in_from_and_platform_args(project: Path, store: str, local_busybox: Path,
                                                tmp_path: Path) -> None:
    write(project, {"Dockerfile": (
        "ARG NAME=ba\n"
        "ARG SUFFIX\n"
        "FROM ${NAME}${SUFFIX:-se} AS one\n"
        "ARG TARGETPLATFORM\n"
        "ARG BUILDOS\n"
        "ARG BUILDARCH\n"
        "ARG TARGETVARIANT\n"
        "RUN echo \"$TARGETPLATFORM|$BUILDOS|$BUILDARCH|${TARGETVARIANT-unset}\" > /p.txt\n"
        "FROM one\n"
        # a stage built FROM another keeps the ARGs that one declared (BuildKit's dispatch
        # state is inherited), in RUN's environment and in its history
        "ARG MINE=m\n"
        "RUN echo \"[$TARGETPLATFORM]\" > /q.txt\n")})
    out, oci = tmp_path / "rootfs", tmp_path / "oci.tar"
    _build(store, local_busybox,
           "-o", f"type=local,dest={out}", "-o", f"type=oci,dest={oci}", str(project))
    plat, build_os, build_arch, variant = (out / "p.txt").read_text().strip().split("|")
    assert plat.startswith(f"linux/{ARCH}") and build_os == "linux" and build_arch == ARCH
    assert variant == ("" if ARCH in ("amd64", "arm64") else variant)  # declared: set, maybe empty
    assert (out / "q.txt").read_text() == f"[{plat}]\n"
    last = oci_config(f"oci-archive:{oci}")["history"][-1]["created_by"]
    assert last == (f"RUN |5 TARGETPLATFORM={plat} BUILDOS=linux BUILDARCH={ARCH} "
                    f"TARGETVARIANT={variant} MINE=m /bin/sh -c echo \"[$TARGETPLATFORM]\" > /q.txt"
                    " # buildkit")

    # a FROM that a global build arg changes
    write(project, {"Dockerfile": "ARG BASE=nothing-here\nFROM $BASE\nRUN test -x /bin/busybox\n"})
    _build(store, local_busybox,
           "--build-arg", "BASE=base", str(project))


def test_proxy_args_reach_run_but_not_the_image(project: Path, store: str, local_busybox: Path,
                                                tmp_path: Path) -> None:
    write(project, {"Dockerfile": (
        "FROM base\n"
        "RUN env > /env.txt\n"
        "ARG no_proxy\n"
        "RUN env > /env2.txt\n")})
    out, oci = tmp_path / "rootfs", tmp_path / "oci.tar"
    _build(store, local_busybox,
           "--build-arg", "HTTP_PROXY=http://proxy.invalid:3128",
           "--build-arg", "no_proxy=localhost",
           "-o", f"type=local,dest={out}", "-o", f"type=oci,dest={oci}", str(project))
    env = _env_file(out / "env.txt")
    assert env["HTTP_PROXY"] == "http://proxy.invalid:3128"
    assert env["no_proxy"] == "localhost"
    cfg = oci_config(f"oci-archive:{oci}")
    assert not any("proxy" in e.lower() for e in cfg["config"]["Env"])
    history = [h["created_by"] for h in cfg["history"]]
    # undeclared: not in the history; declared with ARG: recorded as any other arg
    assert history[1] == "RUN /bin/sh -c env > /env.txt # buildkit"
    assert history[2] == "ARG no_proxy=localhost"
    assert history[3] == "RUN |1 no_proxy=localhost /bin/sh -c env > /env2.txt # buildkit"
    assert "proxy.invalid" not in str(cfg)

    # another proxy is not another step: BuildKit keeps proxy args out of the cache key
    meta = tmp_path / "meta.json"
    _build(store, local_busybox,
           "--build-arg", "HTTP_PROXY=http://other-proxy.invalid:8080",
           "--build-arg", "no_proxy=localhost", "--metadata-file", str(meta), str(project))
    steps = json.loads(meta.read_text())["pybuild.steps"]
    assert [s["cached"] for s in steps] == [True, True]


def test_proxy_args_are_given_in_both_cases_over_env(project: Path, store: str,
                                                      local_busybox: Path, tmp_path: Path) -> None:
    # BuildKit gives each proxy under both names whatever the build arg's case, and after the
    # step's own environment, so it wins over an ENV of the same name (docker does the same)
    write(project, {"Dockerfile": (
        "FROM base\n"
        "ENV ftp_proxy=from-env\n"
        "ARG no_proxy\n"
        "RUN env > /env.txt\n")})
    out, oci = tmp_path / "rootfs", tmp_path / "oci.tar"
    _build(store, local_busybox,
           "--build-arg", "https_proxy=http://low.invalid:1", "--build-arg", "ftp_proxy=ftp://f.invalid",
           "--build-arg", "no_proxy=a,b", "--build-arg", "ALL_PROXY=",
           "-o", f"type=local,dest={out}", "-o", f"type=oci,dest={oci}", str(project))
    env = _env_file(out / "env.txt")
    proxies = {k: v for k, v in env.items() if "proxy" in k.lower()}
    assert proxies == {"HTTPS_PROXY": "http://low.invalid:1", "https_proxy": "http://low.invalid:1",
                       "FTP_PROXY": "ftp://f.invalid", "ftp_proxy": "ftp://f.invalid",
                       "NO_PROXY": "a,b", "no_proxy": "a,b"}
    cfg = oci_config(f"oci-archive:{oci}")
    assert "ftp_proxy=from-env" in cfg["config"]["Env"]
    assert cfg["history"][-1]["created_by"] == "RUN |1 no_proxy=a,b /bin/sh -c env > /env.txt # buildkit"


def test_unused_build_arg_warns_as_docker(project: Path, store: str) -> None:
    write(project, {"a": "a", "Dockerfile": (
        "ARG USED_GLOBAL\nFROM scratch AS other\nARG ONLY_IN_OTHER\n"
        "FROM scratch\nARG USED\nCOPY a /\n")})
    done = pybuild("build", "--root", store, "--build-arg", "USED=1", "--build-arg", "USED_GLOBAL=1",
                   "--build-arg", "ZED=1", "--build-arg", "ALPHA=2", "--build-arg", "ONLY_IN_OTHER=3",
                   "--build-arg", "HTTPS_PROXY=http://x.invalid", str(project))
    # the words docker prints; a stage the target does not need consumes nothing; proxies never warn
    assert "[Warning] One or more build-args [ALPHA ONLY_IN_OTHER ZED] were not consumed" in done.stderr
    assert done.stderr.count("were not consumed") == 1
    quiet = pybuild("build", "--root", store, "--build-arg", "USED=1", str(project))
    assert "not consumed" not in quiet.stderr
