"""builder.expand against BuildKit's own shell-lexer golden files (envVarTest, wordsTest).

The files are read exactly as fixtures/conformance's README (section 4 and 5) says.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ExpandError
from builder.expand import expand_word, expand_words

SHELL = Path(__file__).resolve().parents[2] / "fixtures" / "conformance" / "buildkit" / "shell"
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _lines(name: str) -> list[tuple[int, str]]:
    path = SHELL / name
    if not path.exists():  # pragma: no cover - only while the fixtures are being copied
        return []
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    return [(n, line.removesuffix("\r")) for n, line in enumerate(text.split("\n"), 1)]


def _env_var_cases() -> list[pytest.ParameterSet]:
    cases = []
    for lineno, raw in _lines("envVarTest"):
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest:{lineno}: {raw!r}"
        platform, source, expected = (f.strip() for f in fields)
        assert platform in ("A", "U", "W"), f"envVarTest:{lineno}: platform {platform!r}"
        if platform == "W":
            continue
        cases.append(pytest.param(source, expected, id=f"L{lineno}:{source}"))
    return cases


def _words_cases() -> list[pytest.ParameterSet]:
    cases = []
    env: dict[str, str] = {}
    for lineno, line in _lines("wordsTest"):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[3:].lstrip(" ").partition("=")
            env[name] = value
            continue
        if not line:  # the file's final newline
            continue
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest:{lineno}: {line!r}"
        source = fields[0].strip()
        expected = fields[1].lstrip(" ").split(",")
        cases.append(pytest.param(source, dict(env), expected, id=f"L{lineno}:{source}"))
    return cases


ENV_VAR_CASES = _env_var_cases()
WORDS_CASES = _words_cases()
_MISSING = not SHELL.is_dir()


@pytest.mark.skipif(_MISSING, reason=f"{SHELL} not there yet")
def test_case_counts() -> None:
    # README: 228 cases apply on Linux (36 of all 230 expect an error), 24 in wordsTest.
    assert len(ENV_VAR_CASES) == 228
    assert sum(1 for p in ENV_VAR_CASES if p.values[1] == "error") == 36
    assert len(WORDS_CASES) == 24


@pytest.mark.parametrize(("source", "expected"), ENV_VAR_CASES)
def test_env_var(source: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(ExpandError):
            expand_word(source, ENV)
    else:
        assert expand_word(source, ENV) == expected


@pytest.mark.parametrize(("source", "env", "expected"), WORDS_CASES)
def test_words(source: str, env: dict[str, str], expected: list[str]) -> None:
    try:
        result = expand_words(source, env)
    except ExpandError:
        result = ["error"]
    assert result == expected
