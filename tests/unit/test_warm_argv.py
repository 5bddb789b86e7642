"""Which command lines a replay of a fully cached build may answer (builder.warm)."""
from __future__ import annotations

import pytest

from builder.warm import _ignored_top_level, _parse


@pytest.mark.parametrize("argv", [
    ["."], ["build", "."], ["build"], ["-t", "a:1", "."], ["build", "--tag=a", "-t", "b", "ctx"],
    ["build", "-q", "--build-arg", "A=1", "--build-arg", "B", "--target", "t", "."],
    ["build", "--metadata-file", "m.json", "--iidfile=i", "--progress", "plain", "."],
    ["-f", "other.Dockerfile", "--root", "/x", "."],
    ["build", "--build-context", "bb=oci-layout:///l:latest", "--build-context=b=docker-image://alpine", "."],
])
def test_plain_builds_may_be_replayed(argv: list[str]) -> None:
    parsed = _parse(argv)
    assert parsed is not None


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["build", "--help"], ["images"], ["plan", "."], ["--debug", "build", "."],
    ["build", "--no-cache", "."], ["build", "--pull", "."], ["build", "-o", "out", "."],
    ["build", "--output=type=oci,dest=x", "."], ["build", "--push", "-t", "a", "."],
    ["build", "--secret", "id=a,src=f", "."], ["build", "--ssh", "default", "."],
    ["build", "--explain", "."], ["build", "--cache-from", "r/x", "."],
    ["build", "--cache-to", "type=local,dest=d", "."], ["build", "--build-context", "a=b", "."],
    ["build", "--build-context", "a=https://example.com/x.git", "."],
    ["build", "--check-reproducible", "."], ["build", "-"], ["build", "-f", "-", "."],
    ["build", "a", "b"], ["build", "-t"], ["build", "-qt", "x", "."], ["build", "--", "."],
    ["build", "--no-cache-filter", "s", "."], ["build", "-f", "a", "-f", "b", "."],
])
def test_anything_else_builds(argv: list[str]) -> None:
    assert _parse(argv) is None


def test_parsed_options() -> None:
    parsed = _parse(["build", "-t", "a:1", "--tag=b", "--build-arg", "X", "-q", "ctx"])
    assert parsed == {"context": "ctx", "opts": {"tag": ["a:1", "b"], "build-arg": ["X"], "quiet": ["1"]}}


def test_only_plain_top_level_names_are_skipped(tmp_path) -> None:
    (tmp_path / ".dockerignore").write_text("# c\nnode_modules\n/.git/\n./build\n*.log\nsrc/tmp\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == {"node_modules", ".git", "build"}
    (tmp_path / ".dockerignore").write_text("node_modules\n!node_modules/keep\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == frozenset()
    (tmp_path / ".dockerignore").write_text("node_modules\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("other\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == frozenset()
    (tmp_path / "Dockerfile.dockerignore").unlink()
    (tmp_path / ".dockerignore").write_text(".dockerignore\nDockerfile\nnode_modules\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == {"node_modules"}
