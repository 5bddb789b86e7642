"""`--call targets`: which comment describes which stage, and the table buildx prints."""
from __future__ import annotations

from builder.calltargets import Target, format_targets, list_targets
from builder.parse import parse_dockerfile

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# base is where it starts
FROM busybox AS base
RUN <<EOT
# build is not described here: this is a heredoc's body
EOT

# build compiles the binary
#   and a second line
FROM base AS Build

# test is dropped by the bare # below
#
# test runs the tests
FROM build AS test
# Other is not how the stage is named (names are lower-cased, the match is exact)
FROM --platform=$BUILDPLATFORM scratch AS other
COPY --from=build / /
FROM scratch
"""


def test_each_stage_takes_the_comment_above_its_from_that_starts_with_its_name() -> None:
    targets = list_targets(parse_dockerfile(DOCKERFILE, filename="Dockerfile"))
    assert targets == [
        Target("base", "is where it starts", False, "busybox", ""),
        Target("build", "compiles the binary", False, "base", ""),
        Target("test", "runs the tests", False, "build", ""),
        Target("other", "", False, "scratch", "$BUILDPLATFORM"),
        Target("", "", True, "scratch", ""),
    ]


def test_the_table_pads_the_first_column_and_marks_the_default() -> None:
    assert format_targets([Target("base", "is where it starts", False, "busybox", ""),
                           Target("release", "", True, "base", "")]) == (
        "TARGET            DESCRIPTION\n"
        "base              is where it starts\n"
        "release (default) \n")
    assert format_targets([Target("", "", True, "scratch", "")]) == (
        "TARGET    DESCRIPTION\n"
        "(default) \n")


def test_directives_are_not_comments_but_a_comment_before_them_ends_them() -> None:
    text = "# escape=`\n# app serves\nFROM scratch AS app\n"
    assert list_targets(parse_dockerfile(text))[0].description == "serves"
    # a directive after a comment is a comment: "# syntax=x" does not start with "app "
    text = "# app first\n# syntax=x\nFROM scratch AS app\n"
    assert list_targets(parse_dockerfile(text))[0].description == "first"
