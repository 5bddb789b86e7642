"""Shell completion for bash, zsh and fish, through the lazily loaded commands."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("shell", "marker"), [("bash", "_pybuild_completion"),
                                               ("zsh", "#compdef pybuild"),
                                               ("fish", "complete --no-files --command pybuild")])
def test_completion_scripts(shell: str, marker: str) -> None:
    out = subprocess.run([sys.executable, "-m", "builder", "completion", shell],
                         capture_output=True, text=True, check=True)
    assert marker in out.stdout


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(cword),
           "_PYBUILD_COMPLETE": "bash_complete"}
    out = subprocess.run([sys.executable, "-m", "builder"], capture_output=True, text=True,
                         env=env, check=False)
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line]


def test_commands_and_build_flags_complete() -> None:
    assert "build" in _complete("pybuild bu", 1)
    assert {"--no-cache", "--no-cache-filter"} <= set(_complete("pybuild build --no", 2))
