"""buildkit's own parser golden files (fixtures/conformance/buildkit, byte-identical copies)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import cli
from builder.dump import dump_buildkit
from builder.errors import ParseError
from builder.parse import parse_dockerfile, parse_nodes

PARSER = Path(__file__).resolve().parents[2] / "fixtures" / "conformance" / "buildkit" / "parser"
CASES = sorted(p.name for p in (PARSER / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (PARSER / "testfiles-negative").iterdir())


def test_all_cases_are_there() -> None:
    assert len(CASES) == 33 and len(NEGATIVE) == 4


@pytest.mark.parametrize("case", CASES)
def test_dump_matches_result_byte_for_byte(case: str) -> None:
    folder = PARSER / "testfiles" / case
    expected = (folder / "result").read_bytes().decode("utf-8")
    assert dump_buildkit(parse_nodes((folder / "Dockerfile").read_bytes())) == expected


@pytest.mark.parametrize("case", ["json", "escape-after-comment", "lk4d4-the-edge-case-generator"])
def test_cli_prints_result(case: str) -> None:
    folder = PARSER / "testfiles" / case
    result = CliRunner().invoke(cli, ["parse", "--format=buildkit", str(folder / "Dockerfile")])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (folder / "result").read_bytes()


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_cases_are_rejected(case: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_dockerfile((PARSER / "testfiles-negative" / case / "Dockerfile").read_bytes())
    expected = {
        "empty_dockerfile": "file with no instructions",
        "only_comments": "file with no instructions",
        "env_no_value": "ENV must have two arguments",
        "shykes-nested-json": "arrays must be comprised of strings only",
    }[case]
    assert expected in info.value.message


def test_line_ranges() -> None:
    df = parse_dockerfile((PARSER / "testfile-line" / "Dockerfile").read_bytes())
    assert [(i.range.start, i.range.end) for i in df.instructions] == [(5, 5), (11, 12), (17, 31)]
    assert df.directives == (("escape", "\\"),)
    assert len(df.warnings) == 1 and df.warnings[0].startswith("Empty continuation line found in: RUN")
