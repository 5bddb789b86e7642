"""Platforms as BuildKit reads and writes them (containerd's parse and normalisation), the
platform build args for a target, and whether a step for a platform can run here."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder import instructions as ins
from builder.emulation import emulation_problem
from builder.graph import build_graph, platform_args
from builder.hostplatform import format_platform, host_build_platform, parse_platform
from builder.parse import parse_dockerfile

HOST = format_platform(host_build_platform())
HOST_ARCH = host_build_platform()[1]
OTHER = "amd64" if HOST_ARCH == "arm64" else "arm64"
QEMU = {"arm64": "aarch64", "amd64": "x86_64"}


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/arm64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"), ("linux/aarch64", "linux/arm64"),
    ("arm64", "linux/arm64"), ("linux/arm", "linux/arm/v7"), ("armhf", "linux/arm/v7"),
    ("armel", "linux/arm/v6"), ("linux/arm/7", "linux/arm/v7"), ("Linux/X86_64", "linux/amd64"),
    ("linux/amd64/v1", "linux/amd64"), ("linux/amd64/v3", "linux/amd64/v3"), ("i686", "linux/386"),
    ("linux", HOST), ("windows/amd64", "windows/amd64"), ("macos/arm64", "darwin/arm64"),
])
def test_platforms_are_read_and_normalised_as_containerd_does(text: str, expected: str) -> None:
    assert format_platform(parse_platform(text)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("nosuch", "'nosuch': unknown operating system or architecture"),
    ("linux/", "'linux/': invalid platform component ''"),
    ("linux/a b", "'linux/a b': invalid platform component 'a b'"),
    ("linux/arm/v7/x", "too many parts"),
])
def test_bad_platforms_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_platform(text)


def test_platform_args_of_a_target() -> None:
    args = platform_args("linux/arm/v7")
    assert {k: v for k, v in args.items() if k.startswith("TARGET")} == {
        "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm",
        "TARGETVARIANT": "v7"}
    assert args["BUILDPLATFORM"] == HOST and platform_args()["TARGETPLATFORM"] == HOST


def _graph(text: str, **kw):
    return build_graph(parse_dockerfile(text, filename="Dockerfile"), **kw)


def test_the_graph_expands_from_platform_with_the_target() -> None:
    graph = _graph("FROM --platform=$TARGETPLATFORM scratch AS a\n"
                   "FROM --platform=$BUILDPLATFORM scratch AS b\n"
                   "FROM --platform=linux/aarch64 scratch AS c\nFROM scratch\n",
                   platform="linux/riscv64")
    assert [s.platform for s in graph.stages] == ["linux/riscv64", HOST, "linux/arm64", None]
    assert dict(graph.global_args)["TARGETARCH"] == "riscv64"
    assert isinstance(graph.stages[0].from_, ins.From)


def test_a_global_arg_without_a_value_keeps_what_it_held() -> None:
    # podman's e2e Containerfile.with-platform: the declaration does not blank TARGETPLATFORM
    graph = _graph("ARG TARGETPLATFORM\nFROM --platform=$TARGETPLATFORM scratch\n", platform="linux/arm64")
    assert graph.stages[0].platform == "linux/arm64"
    graph = _graph("ARG V=1\nARG V\nFROM scratch\nARG V\n")
    assert dict(graph.global_args)["V"] == "1"


def _binfmt(tmp_path: Path, entries: dict[str, str]) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir(parents=True)
    (root / "status").write_text("enabled\n")
    for name, text in entries.items():
        (root / name).write_text(text)
    return root


def test_native_platforms_need_no_emulator(tmp_path: Path) -> None:
    assert emulation_problem(HOST, binfmt=tmp_path / "none") is None
    if HOST_ARCH == "amd64":
        assert emulation_problem("linux/386", binfmt=tmp_path / "none") is None


def test_an_emulator_is_found_in_binfmt_misc(tmp_path: Path) -> None:
    entry = f"qemu-{QEMU[OTHER]}"
    good = _binfmt(tmp_path / "a", {entry: "enabled\ninterpreter /usr/libexec/qemu\nflags: PF\n"})
    assert emulation_problem(f"linux/{OTHER}", binfmt=good) is None
    no_f = _binfmt(tmp_path / "b", {entry: "enabled\ninterpreter /usr/bin/qemu\nflags: P\n"})
    assert "without the F (fix-binary) flag" in emulation_problem(f"linux/{OTHER}", binfmt=no_f)
    off = _binfmt(tmp_path / "c", {entry: "disabled\nflags: F\n"})
    assert "registered but disabled" in emulation_problem(f"linux/{OTHER}", binfmt=off)
    missing = _binfmt(tmp_path / "d", {})
    assert f"none is registered ({missing / entry} is missing)" in emulation_problem(
        f"linux/{OTHER}", binfmt=missing)
    unmounted = emulation_problem(f"linux/{OTHER}", binfmt=tmp_path / "nothing")
    assert "binfmt_misc is not mounted" in unmounted and "apt-get install qemu-user-static" in unmounted
    assert "cannot run programs for windows" in emulation_problem("windows/amd64", binfmt=good)
