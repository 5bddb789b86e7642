"""`pybuild build` read without click (builder.commands.build_impl.fast_args) must give the
command exactly the keywords click gives it, and leave to click every line it would refuse
or answer itself (so that its messages stay click's)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from builder.commands.build import command
from builder.commands.build_impl import fast_args

ROOT = Path(__file__).resolve().parent.parent.parent


def _click(args: list[str]) -> dict[str, object] | None:
    try:
        with click.Context(command, info_name="build") as ctx:
            return command.make_context("build", list(args), parent=ctx).params
    except (click.exceptions.ClickException, click.exceptions.Exit):  # an error, or --help
        return None


LINES = [
    [], ["."], ["ctx"], ["-t", "a:1", "ctx"], ["-ta:1", "ctx"], ["-qt", "a:1"], ["-q", "-t", "a", "-t", "b"],
    ["--tag=a:1", "--tag", "b", "--", "-weird-dir"], ["--no-cache", "--pull", "--load", "ctx"],
    ["--progress", "plain", "--network=none", "--compression", "zstd", "--compression-level", "3"],
    ["--jobs", "0", "--cpus", "1.5", "--memory", "512m", "--shm-size", "64m"],
    ["--build-arg", "A=1", "--build-arg", "B", "--label", "k=v", "--annotation", "x=y"],
    ["-f", "-", "-"], ["--file=Dockerfile.dev", "--target", "build", "--platform", "linux/arm64"],
    ["--iidfile", "/nonexistent/iid", "--metadata-file", "/nonexistent/md.json"],
    ["--root", "/tmp", "--source-date-epoch", "0", "--insecure-registry", "r:5000"],
    ["--secret", "id=s,env=HOME", "--ssh", "default", "-o", "type=oci,dest=o.tar", "--push"],
    ["--provenance", "false", "--sbom=0", "--attest", "type=provenance,disabled=true"],
    ["--build-context", "a=docker-image://x", "--add-host", "h:1.2.3.4", "--ulimit", "nofile=1:2"],
    ["--cache-from", "r/x", "--cache-to", "type=local,dest=d", "--allow", "network.host", "--explain"],
    ["--no-cache-filter", "a,b", "ctx", "--quiet"], ["-", "-t", "x"],
    # refused by click, or its own: each left to it
    ["a", "b"], ["--jobs", "-1"], ["--jobs", "x"], ["--cpus", "0"], ["--progress", "fancy"],
    ["--no-cache=1"], ["-t"], ["--tag"], ["--nope"], ["-z"], ["-h"], ["--help"], ["--root", "/etc/passwd"],
    ["--iidfile", "/tmp"], ["--check"], ["--check-reproducible"], ["--dry-run"], ["--compression-level", "x"],
]


@pytest.mark.parametrize("args", LINES, ids=" ".join)
def test_fast_args_read_a_line_as_click_does(args: list[str]) -> None:
    expected = _click(args)
    fast = fast_args(["build", *args])
    if fast is None:  # left to click: only where it refuses the line or must run it itself
        assert expected is None or any(expected[k] for k in ("check", "check_reproducible", "dry_run"))
    else:
        assert fast == expected
    # `pybuild ARGS` is `pybuild build ARGS`; --debug before it is the group's
    if args[:1] != ["-"] and args and args[0].startswith("-"):
        assert fast_args(["--debug", *args]) == fast


def test_environment_variables_of_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_ROOT", "/nonexistent/store")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    expected = _click(["ctx"])
    assert expected is not None and fast_args(["build", "ctx"]) == expected
    assert expected["root"] == "/nonexistent/store" and expected["source_date_epoch"] == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    assert _click(["ctx"]) is None and fast_args(["build", "ctx"]) is None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")  # empty: unset, as click reads it
    assert fast_args(["build", "ctx"]) == _click(["ctx"])


def test_other_commands_and_group_options_go_to_click() -> None:
    for argv in (["images"], ["run", "x"], ["--version"], ["--help"], ["--debug"], [], ["plan", "."]):
        assert fast_args(argv) is None


def test_a_plain_build_line_loads_no_click() -> None:
    code = ("import sys; from builder.commands.build_impl import fast_args, run; "
            "assert fast_args(['-t', 'x', '.']) is not None; import builder.build; "
            "print('click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "False"
