"""The build checks: each of BuildKit's rules firing (and not) with its exact message and
line, the check= options, and the texts shown (summary, --check report, progress line).

The cases follow the semantics of BuildKit's own check tests, written anew here."""
from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import pytest

from builder.checks import (
    Finding,
    Linter,
    check_report,
    excerpt,
    options_for,
    parse_check_options,
    summary_text,
)
from builder.checks_rules import run_checks
from builder.dockerignore import IgnoreMatcher
from builder.errors import CheckError, GraphError
from builder.graph import build_graph, platform_args
from builder.parse import parse_dockerfile
from builder.progress import Progress

HOST = platform_args()["TARGETPLATFORM"]


def lint(text: str, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
         every_stage: bool = False, bases: Mapping[str, Any] | None = None,
         dockerignore: str | None = None) -> list[str]:
    """The short lines of what the checks find, in the order they find it."""
    return [f.short for f in findings(text, build_args=build_args, target=target,
                                      every_stage=every_stage, bases=bases,
                                      dockerignore=dockerignore).findings]


def findings(text: str, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
             every_stage: bool = False, bases: Mapping[str, Any] | None = None,
             dockerignore: str | None = None) -> Linter:
    args = dict(build_args or {})
    df = parse_dockerfile(text)
    graph = build_graph(df, build_args=args, target=target)
    linter = Linter(options_for(df.directive("check"), args))
    reached = range(len(graph.stages)) if every_stage else graph.order
    known = dict(bases or {})
    run_checks(linter, df, graph, build_args=args, reached=reached,
               base_config=lambda stage: known.get(stage.base.name),
               ignore=IgnoreMatcher.from_text(dockerignore) if dockerignore is not None else None,
               target=target)
    return linter


def image(env: tuple[str, ...] = ("PATH=/usr/bin:/bin",), *, shell: tuple[str, ...] = (),
          platform: str = HOST, onbuild: tuple[str, ...] = ()) -> dict[str, Any]:
    os_name, arch, *variant = platform.split("/")
    cfg: dict[str, Any] = {"Env": list(env)}
    if shell:
        cfg["Shell"] = list(shell)
    if onbuild:
        cfg["OnBuild"] = list(onbuild)
    out = {"os": os_name, "architecture": arch, "config": cfg}
    if variant:
        out["variant"] = variant[0]
    return out


# -- options ---------------------------------------------------------------------------
def test_check_options_parse_as_buildkit_does() -> None:
    opts = parse_check_options(" skip = A, B ;error=True;experimental=all")
    assert opts.skip == {"A", "B"} and opts.error and opts.experimental_all and not opts.skip_all
    assert parse_check_options("skip=all").skip_all
    assert not parse_check_options("").error
    with pytest.raises(ValueError, match=r'^invalid check option "bogus"$'):
        parse_check_options("bogus=1")
    with pytest.raises(ValueError, match=r'^invalid check option "skipall"$'):
        parse_check_options("skipall")
    # a fourth part stays glued to the third, which then is not a boolean
    with pytest.raises(ValueError, match=r'parsing "true;skip=all": invalid syntax'):
        parse_check_options("skip=A;experimental=B;error=true;skip=all")


def test_skip_all_and_a_skip_list_silence_the_rules() -> None:
    text = "FROM scratch as base\ncopy Dockerfile .\n"
    assert lint("#check=skip=all\n" + text) == []
    assert lint("#check=skip=ConsistentInstructionCasing,FromAsCasing\n" + text) == []
    assert lint("#check=skip=ConsistentInstructionCasing\n" + text) == [
        "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)"]


def test_error_true_names_the_rules_found() -> None:
    linter = findings("#check=skip=ConsistentInstructionCasing;error=true\n"
                      "FROM scratch as base\ncopy Dockerfile .\n")
    assert linter.violation() == "lint violation found for rules: FromAsCasing"
    # nothing found: no error even with error=true
    assert findings("#check=skip=all;error=true\nFROM scratch as base\n").violation() is None


def test_the_build_arg_replaces_the_directive() -> None:
    text = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n"
    linter = findings(text, build_args={
        "BUILDKIT_DOCKERFILE_CHECK": "skip=ConsistentInstructionCasing;error=true"})
    assert [f.rule for f in linter.findings] == ["FromAsCasing"]
    assert linter.violation() == "lint violation found for rules: FromAsCasing"
    # and error=true in the file is gone with it
    assert findings("#check=error=true\nFROM scratch as base\ncopy x .\n",
                    build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=all"}).violation() is None


def test_bad_options_fail_with_buildkits_words() -> None:
    with pytest.raises(CheckError, match=r'^failed to parse check options: invalid check option "x"$'):
        options_for("x=1", {})
    with pytest.raises(CheckError, match=r"^failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: "
                                         r'failed to parse check option "error=maybe"'):
        options_for(None, {"BUILDKIT_DOCKERFILE_CHECK": "error=maybe"})


def test_a_check_comment_applies_to_its_instruction_only() -> None:
    text = ("FROM scratch\n"
            "# check=skip=MaintainerDeprecated // allowed here\n"
            "MAINTAINER a\n"
            "MAINTAINER b\n")
    assert lint(text) == [("MaintainerDeprecated: Maintainer instruction is deprecated in favor "
                          "of using label (line 4)")]
    # an empty comment line in between ends the comment block
    assert len(lint("FROM scratch\n# check=skip=all\n#\nMAINTAINER a\n")) == 1
    # a blank line does not
    assert lint("FROM scratch\n# check=skip=all\n\nMAINTAINER a\n") == []


# -- the parse and the stages ------------------------------------------------------------------
def test_stage_name_casing_and_from_as_casing() -> None:
    text = ("\n# comment\n#\nFROM scratch AS BadStageName\n\n"
            "FROM scratch as base2\n\nFROM scratch AS base3\n")
    assert lint(text) == [
        "StageNameCasing: Stage name 'BadStageName' should be lowercase (line 4)",
        "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 6)"]
    assert lint("from scratch AS base\nfrom scratch as base2\n") == [
        "FromAsCasing: 'AS' and 'from' keywords' casing do not match (line 1)"]
    # a FROM that is not consistently cased itself is ConsistentInstructionCasing's business
    assert [f.split(":")[0] for f in lint("From scratch as base\nFROM scratch AS base2\n")] == [
        "ConsistentInstructionCasing"]


def test_no_empty_continuation_points_at_the_last_line() -> None:
    text = "\nFROM scratch\n# w\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n"
    assert lint(text) == ["NoEmptyContinuation: Empty continuation line (line 6)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("From scratch as base\nFROM scratch AS base2\n",
     "Command 'From' should match the case of the command majority (uppercase) (line 1)"),
    ("FROM scratch\ncopy a /foo\nCOPY a /bar\n",
     "Command 'copy' should match the case of the command majority (uppercase) (line 2)"),
    ("frOM scratch as base\nfrom scratch as base2\n",
     "Command 'frOM' should match the case of the command majority (lowercase) (line 1)"),
    ("from scratch\nCOPY a /foo\ncopy a /bar\n",
     "Command 'COPY' should match the case of the command majority (lowercase) (line 2)"),
    ("from scratch\nCOPY a /foo\nCOPY a /bar\nCOPY a /baz\n",
     "Command 'from' should match the case of the command majority (uppercase) (line 1)"),
])
def test_consistent_instruction_casing(text: str, expected: str) -> None:
    assert lint(text) == ["ConsistentInstructionCasing: " + expected]


def test_consistent_casing_passes_and_ignores_args_before_from() -> None:
    assert lint("from scratch\ncopy a /foo\ncopy a /bar\n") == []
    assert lint("FROM scratch\nCOPY a /foo\n") == []
    assert lint("arg x=1\nFROM scratch\nCOPY a /foo\n") == []


def test_duplicate_and_reserved_stage_names() -> None:
    assert lint("FROM scratch AS b\nFROM scratch AS b\n") == [
        'DuplicateStageName: Duplicate stage name "b", stage names should be unique (line 2)']
    assert lint("FROM scratch AS b1\nFROM scratch AS b2\n") == []
    assert lint("FROM scratch AS scratch\nFROM scratch AS context\n") == [
        'ReservedStageName: Stage name should not use the same name as reserved stage "scratch" (line 1)',
        'ReservedStageName: Stage name should not use the same name as reserved stage "context" (line 2)']
    assert lint("FROM scratch\nFROM scratch AS a\n") == []


def test_invalid_default_arg_in_from() -> None:
    assert lint("ARG VERSION\nFROM busybox:$VERSION\n", build_args={"VERSION": "latest"}) == [
        ("InvalidDefaultArgInFrom: Default value for ARG busybox:$VERSION results in empty or "
         "invalid base image name (line 2)")]
    assert lint("ARG IMAGE\nFROM $IMAGE\n", build_args={"IMAGE": "busybox"}) == [
        ("InvalidDefaultArgInFrom: Default value for ARG $IMAGE results in empty or invalid base "
         "image name (line 2)")]
    assert lint('ARG SFX="box:"\nFROM busy${SFX}\n', build_args={"SFX": "box:latest"}) == [
        ("InvalidDefaultArgInFrom: Default value for ARG busy${SFX} results in empty or invalid "
         "base image name (line 2)")]
    assert lint('ARG VERSION="latest"\nFROM busybox:${VERSION}\n') == []
    assert lint('ARG V=""\nFROM busybox:stable${V}\n', build_args={"V": "-musl"}) == []
    assert lint("ARG V\nFROM busybox:stable${V}\n", build_args={"V": "-musl"}) == []


# -- FROM lines ----------------------------------------------------------------------------
def test_undefined_arg_in_from() -> None:
    assert lint("ARG base=scratch\nFROM $base\n") == []
    assert lint("ARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\n") == []
    assert lint("FROM --platform=$BUILDPLATFORM scratch\n") == []
    assert lint("ARG DEBUG\nFROM scratch${DEBUG}\n") == []
    assert lint("ARG DEBUG\nFROM scra${DEBUG:-tch}\n") == []
    assert lint('ARG DEBUG=""\nFROM scratch${DEBUG-@bogus}\n') == []
    assert lint("ARG tag=latest\nFROM busybox:${tag}${version} AS b\n") == [
        "UndefinedArgInFrom: FROM argument 'version' is not declared (line 2)"]
    # BuildKit warns, then fails the build: pybuild's graph refuses it first (the warning is
    # lost; see docs/build-checks.md), with the same error
    with pytest.raises(GraphError, match=r"^Dockerfile:1: empty platform value from expression \$BULIDPLATFORM "
                                         r"\(did you mean BUILDPLATFORM\?\)$"):
        lint("FROM --platform=$BULIDPLATFORM scratch\n")
    assert lint("ARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n") == [
        "UndefinedArgInFrom: FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?) (line 2)"]


def test_redundant_target_platform() -> None:
    assert lint("FROM --platform=$TARGETPLATFORM scratch\n") == [
        ("RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is "
         "redundant as this is the default behavior (line 1)")]
    assert lint("FROM --platform=${TARGETPLATFORM} scratch\n") == [
        ("RedundantTargetPlatform: Setting platform to predefined ${TARGETPLATFORM} in FROM is "
         "redundant as this is the default behavior (line 1)")]
    assert lint("# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n") == []
    assert lint("FROM --platform=$BUILDPLATFORM scratch\n") == []


def test_from_platform_flag_const_disallowed() -> None:
    assert lint("FROM --platform=linux/amd64 scratch\n") == [
        ('FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value '
         '"linux/amd64" (line 1)')]
    # a stage named for its platform is what the flag is for
    assert lint("FROM --platform=linux/amd64 scratch AS my_amd64_stage\n") == []
    assert lint("FROM --platform=linux/amd64 scratch AS linux\n") == []


def test_invalid_base_image_platform() -> None:
    other = "linux/arm64" if HOST != "linux/arm64" else "linux/amd64"
    assert lint("FROM busybox\nENV foo=bar\n", bases={"busybox": image(platform=other)}) == [
        (f'InvalidBaseImagePlatform: Base image busybox was pulled with platform "{other}", '
         f'expected "{HOST}" for current build (line 1)')]
    assert lint("FROM busybox\n", bases={"busybox": image()}) == []
    # only for stages the build reaches
    assert lint("FROM busybox AS a\nFROM scratch\n", bases={"busybox": image(platform=other)}) == []


# -- instructions of the reached stages ----------------------------------------------------------
def test_json_args_recommended() -> None:
    assert lint("FROM scratch\nCMD mycommand\n") == [
        ("JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior "
         "related to OS signals (line 2)")]
    assert lint("FROM scratch\nENTRYPOINT mycommand\n") == [
        ("JSONArgsRecommended: JSON arguments recommended for ENTRYPOINT to prevent unintended "
         "behavior related to OS signals (line 2)")]
    assert lint('FROM scratch\nSHELL ["/bin/custom"]\nCMD mycommand\n') == []
    assert lint('FROM scratch AS base\nSHELL ["/bin/custom"]\nFROM base\nENTRYPOINT x\n') == []
    # a SHELL set by the base image counts too
    assert lint("FROM img\nCMD x\n", bases={"img": image(shell=("/bin/bash", "-c"))}) == []
    assert lint('FROM scratch\nCMD ["x"]\n') == []
    assert lint("FROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n") == []


def test_maintainer_deprecated() -> None:
    assert lint("FROM scratch\nMAINTAINER me@example.org\n") == [
        "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"]
    assert lint('FROM scratch\nLABEL org.opencontainers.image.authors="me@example.org"\n') == []


def test_workdir_relative_path() -> None:
    assert lint("FROM scratch\nWORKDIR app/\n") == [
        ('WorkdirRelativePath: Relative workdir "app/" can have unexpected results if the base '
         "image changes (line 2)")]
    # once set absolutely in this Dockerfile (in a parent stage too), relative is fine
    assert lint("FROM scratch AS a\nWORKDIR /app\nFROM a AS b\nWORKDIR subdir/\n") == []
    assert lint("FROM scratch\nWORKDIR app\nWORKDIR more\n") == [
        ('WorkdirRelativePath: Relative workdir "app" can have unexpected results if the base '
         "image changes (line 2)")]
    assert lint("FROM scratch\nARG D=/x\nWORKDIR $D\n") == []


def test_undefined_var() -> None:
    assert lint("FROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n") == []
    assert lint("FROM img AS base\nARG foo=Dockerfile\nFROM base\nCOPY $foo .\n",
                bases={"img": image()}) == []
    assert lint("FROM img\nRUN echo $PATH $whatever\n", bases={"img": image()}) == []
    assert lint("FROM img\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n", bases={"img": image()}) == [
        "UndefinedVar: Usage of undefined variable '$foo' (line 2)"]
    assert lint("FROM img\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nCOPY $DIR_ASSET .\n",
                bases={"img": image()}) == [
        "UndefinedVar: Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?) (line 4)"]
    assert lint("FROM img\nENV PATH=$PAHT:/tmp/bin\n", bases={"img": image()}) == [
        "UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) (line 2)"]
    # what the base image's config sets is defined
    assert lint("FROM img\nWORKDIR $HOME\n", bases={"img": image(("HOME=/root",))}) == []
    # an unknown base (its config could not be read) reports nothing
    assert lint("FROM img\nWORKDIR /$HOME\n") == []


def test_undefined_var_only_in_reached_stages_unless_every_stage() -> None:
    text = "FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n"
    assert lint(text) == ["UndefinedVar: Usage of undefined variable '$bar' (line 5)"]
    assert lint(text, every_stage=True) == [
        "UndefinedVar: Usage of undefined variable '$foo' (line 2)",
        "UndefinedVar: Usage of undefined variable '$bar' (line 5)"]
    assert lint(text, target="first") == ["UndefinedVar: Usage of undefined variable '$foo' (line 2)"]


def test_multiple_instructions_disallowed_points_at_the_one_ignored() -> None:
    def rule(name: str, line: int) -> str:
        return (f"MultipleInstructionsDisallowed: Multiple {name} instructions should not be used "
                f"in the same stage because only the last one will be used (line {line})")

    text = ('FROM scratch\nENTRYPOINT ["/a"]\nENTRYPOINT ["/b"]\nCMD ["/a"]\nCMD ["/b"]\n'
            'HEALTHCHECK CMD ["/a"]\nHEALTHCHECK CMD ["/b"]\n')
    assert lint(text) == [rule("ENTRYPOINT", 2), rule("CMD", 4), rule("HEALTHCHECK", 6)]
    text = ('FROM scratch\nENTRYPOINT ["/a"]\nCMD ["/a"]\nHEALTHCHECK CMD ["/a"]\n'
            "COPY <<EOF /a.txt\nhello\nEOF\n"
            'ENTRYPOINT ["/b"]\nCMD ["/b"]\nHEALTHCHECK CMD ["/b"]\n')
    assert lint(text) == [rule("ENTRYPOINT", 2), rule("CMD", 3), rule("HEALTHCHECK", 4)]
    # a new stage starts over, even from the same stage
    assert lint('FROM scratch AS a\nCMD ["/a"]\nFROM a AS b\nCMD ["/b"]\n') == []


def test_legacy_key_value_format() -> None:
    assert lint("FROM scratch\nENV testkey value\nLABEL key value\n") == [
        ('LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" '
         "format (line 2)"),
        ('LegacyKeyValueFormat: "LABEL key=value" should be used instead of legacy "LABEL key '
         'value" format (line 3)')]
    assert lint("from scratch\nenv k v\nlabel k v\n")[0].startswith(
        'LegacyKeyValueFormat: "env key=value" should be used instead of legacy "env key value"')
    assert lint("FROM scratch\nENV testkey=value\nLABEL key=value\n") == []
    unreached = "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\n\nFROM a AS c\n"
    assert lint(unreached) == []
    assert len(lint(unreached, every_stage=True)) == 1


def test_secrets_used_in_arg_or_env() -> None:
    text = ("FROM scratch\n"
            "ARG SECRET_PASSPHRASE\n"
            "ENV SUPER_Secret=foo\n"
            "ENV password=bar secret=baz\n"
            "ARG super_duper_secret_token=foo auth=bar\n"
            "ENV apikey=bar sunflower=foo\n"
            "ENV git_key=\n"
            "ENV PUBLIC_KEY=\n"
            "ARG public_token\n"
            "ARG SECRET_PASSPHRASE_FILE\n"
            "ENV password_file=bar secret_File=baz\n"
            "ARG AUTH_MODULE_VERSION\n"
            "# check=skip=SecretsUsedInArgOrEnv // allow\n"
            "ENV password=bar\n"
            "# check=skip=all // only this one\n"
            "ARG alternate_password\n")
    found = [(f.line, f.message.split("(")[1]) for f in findings(text).findings]
    assert found == [(2, 'ARG "SECRET_PASSPHRASE")'), (3, 'ENV "SUPER_Secret")'),
                     (4, 'ENV "password")'), (4, 'ENV "secret")'),
                     (5, 'ARG "super_duper_secret_token")'), (5, 'ARG "auth")'),
                     (6, 'ENV "apikey")'), (7, 'ENV "git_key")')]
    assert findings(text).findings[0].message == (
        'Do not use ARG or ENV instructions for sensitive data (ARG "SECRET_PASSPHRASE")')


def test_expose_rules() -> None:
    assert lint("FROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n") == [
        "ExposeProtoCasing: Defined protocol '80/TcP' in EXPOSE instruction should be lowercase (line 2)",
        "ExposeProtoCasing: Defined protocol '8080/TCP' in EXPOSE instruction should be lowercase (line 2)"]
    found = lint("FROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n")
    assert sorted(found) == sorted(
        "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port "
        f"mapping, found '{p}' (line 2)" for p in ("127.0.0.1:80:80", "[::1]:8080:8080", "5000:5000"))


def test_copy_ignored_file() -> None:
    text = "FROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n"
    assert lint(text, dockerignore="Dockerfile\n") == [
        'CopyIgnoredFile: Attempting to Copy file "Dockerfile" that is excluded by .dockerignore (line 2)',
        'CopyIgnoredFile: Attempting to Add file "Dockerfile" that is excluded by .dockerignore (line 3)']
    assert lint("# check=skip=CopyIgnoredFile\n" + text, dockerignore="Dockerfile\n") == []
    # from a stage, not from the context: not the .dockerignore's business
    assert lint("FROM scratch AS base\nCOPY Dockerfile /foobar\nFROM base\n"
                "COPY --from=base /foobar /Dockerfile\n", dockerignore="foobar\n") == []
    # exceptions make it undecidable: BuildKit does not try
    assert lint("FROM scratch\nCOPY ./Dockerfile .\n", dockerignore="**\n!Dockerfile\n") == []
    # the context root only when everything is left out
    assert lint("FROM scratch\nCOPY . .\n", dockerignore=".*\n") == []
    assert lint("FROM scratch\nCOPY . .\n", dockerignore="*\n") == [
        'CopyIgnoredFile: Attempting to Copy file "." that is excluded by .dockerignore (line 2)']


def test_invalid_definition_description_is_experimental() -> None:
    text = ("# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\n"
            "FROM scratch AS base\n# definitely a bad comment\nARG version=latest\n"
            "# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n")
    assert lint(text) == []
    assert lint("# check=experimental=InvalidDefinitionDescription\n" + text) == [
        f"InvalidDefinitionDescription: Comment for {what} should follow the format: "
        f"`# {key} <description>` (line {line})"
        for what, key, line in (("ARG", "foo", 3), ("FROM", "base", 5), ("ARG", "version", 7),
                                ("ARG", "<arg_key>", 9))]
    good = ("# check=skip=all;experimental=InvalidDefinitionDescription\n# foo the foo\nARG foo=bar\n\n"
            "# base the base\nFROM scratch AS base\n# baz the baz\nARG foo=baz bar=qux baz=quux\n"
            "#\nARG bit=bat\n# about COPY\nCOPY Dockerfile .\n")
    assert lint(good) == []


def test_onbuild_triggers_are_checked_at_the_from_line() -> None:
    parent = "FROM scratch AS p\nONBUILD WORKDIR rel\nFROM p\n"
    assert lint(parent) == [
        ('WorkdirRelativePath: Relative workdir "rel" can have unexpected results if the base '
         "image changes (line 3)")]
    assert lint("FROM img\n", bases={"img": image(onbuild=("ENV a b",))}) == [
        ('LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" '
         "format (line 1)")]


# -- what is shown -------------------------------------------------------------------------
def test_summary_counts_each_warning_once() -> None:
    one = Finding("FromAsCasing", "'as' and 'FROM' keywords' casing do not match", 2)
    two = Finding("UndefinedVar", "Usage of undefined variable '$x'", 1)
    assert summary_text([one, two, Finding("UndefinedVar", two.message, 1)]) == (
        "\n 2 warnings found (use pybuild --debug to expand):\n"
        " - UndefinedVar: Usage of undefined variable '$x' (line 1)\n"
        " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)\n")
    assert summary_text([one]).startswith("\n 1 warning found (")
    assert summary_text([]) == ""
    expanded = summary_text([one], debug=True, lines=["# c", "FROM a as b"])
    assert expanded == (
        "\n 1 warning found:\n"
        " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)\n"
        "The 'as' keyword should match the case of the 'from' keyword\n"
        "More info: https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
        "Dockerfile:2\n--------------------\n"
        "   1 |     # c\n   2 | >>> FROM a as b\n   3 |     \n--------------------\n\n")


def test_excerpt_shows_context_as_buildkit() -> None:
    lines = [f"L{i}" for i in range(1, 10)]
    assert excerpt(lines, 5, 5, "Dockerfile").splitlines() == [
        "Dockerfile:5", "--------------------", "   3 |     L3", "   4 |     L4", "   5 | >>> L5",
        "   6 |     L6", "   7 |     L7", "--------------------"]
    # a range gets one line around it
    assert excerpt(lines, 4, 5, "Dockerfile").splitlines()[2:-1] == [
        "   3 |     L3", "   4 | >>> L4", "   5 | >>> L5", "   6 |     L6"]


def test_check_report_as_docker_build_check_prints_it() -> None:
    lines = ["#check=skip=ConsistentInstructionCasing", "FROM scratch as base", "copy Dockerfile ."]
    found = [Finding("FromAsCasing", "'as' and 'FROM' keywords' casing do not match", 2)]
    assert check_report(found, lines, "Dockerfile") == (
        "Check complete, 1 warning has been found!\n"
        "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
        "'as' and 'FROM' keywords' casing do not match\n"
        "Dockerfile:2\n--------------------\n"
        "   1 |     #check=skip=ConsistentInstructionCasing\n"
        "   2 | >>> FROM scratch as base\n"
        "   3 |     copy Dockerfile .\n"
        "   4 |     \n"
        "--------------------\n")
    assert check_report([], lines, "Dockerfile") == "Check complete, no warnings found.\n"
    two = found + [Finding("InvalidBaseImagePlatform", "x", 1)]
    report = check_report(two, lines, "Dockerfile")
    assert report.startswith("Check complete, 2 warnings have been found!\n\nWARNING: "
                             "InvalidBaseImagePlatform\nx\n")  # sorted by line; no link to show


def test_progress_shows_findings_and_sums_them_up() -> None:
    found = Finding("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of "
                    "using label", 3)
    out = io.StringIO()
    progress = Progress("plain", out)
    progress.journal = []
    progress.check(found)
    progress.finish()
    assert out.getvalue() == (
        "WARN: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using "
        "label (line 3)\n"
        "\n 1 warning found (use pybuild --debug to expand):\n"
        " - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label "
        "(line 3)\n")
    assert Finding.from_json(json.loads(json.dumps(progress.journal[0][1]))) == found
    for mode in ("quiet", "rawjson"):
        out = io.StringIO()
        progress = Progress(mode, out)
        progress.check(found)
        progress.finish()
        text = out.getvalue()
        assert "warning found" not in text
        if mode == "rawjson":
            event = json.loads(text)
            assert (event["event"], event["rule"], event["line"]) == ("warning", found.rule, 3)
        else:
            assert text == ""


def test_a_tidy_dockerfile_has_no_findings() -> None:
    text = ("# syntax=docker/dockerfile:1\nARG BASE=scratch\nFROM $BASE AS build\nWORKDIR /src\n"
            "COPY go.mod go.sum ./\nRUN --mount=type=cache,target=/root/.cache go mod download\n"
            "COPY . .\nARG VERSION=dev\nENV CGO_ENABLED=0 VERSION=$VERSION\n"
            "RUN go build -o /out/app .\nFROM scratch\nCOPY --from=build /out/app /app\n"
            'EXPOSE 8080/tcp\nUSER 65534\nENTRYPOINT ["/app"]\n')
    assert lint(text, every_stage=True) == []
