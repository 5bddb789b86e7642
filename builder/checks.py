"""Build checks: BuildKit's Dockerfile lint rules, their configuration and how they print.

This module owns the rule table (names, descriptions, URLs and message texts, which are
BuildKit's word for word: users grep for them and read the docs they link to), the
``check=`` options (the ``# check=`` parser directive, the ``BUILDKIT_DOCKERFILE_CHECK``
build arg and the per-instruction ``# check=`` comments), the ``Linter`` that collects what
the rules find, and the texts shown: a warning's short line, the end-of-build summary and
the ``pybuild build --check`` report. Which rule fires where is ``builder.checks_rules``.

It imports nothing heavy (no dataclasses either): every build imports it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .parse_go import GO_FALSE, GO_TRUE, go_quote

__all__ = ["RULES", "CheckOptions", "Finding", "Linter", "check_report", "excerpt",
           "options_for", "parse_check_options", "summary_text"]

_URL = "https://docs.docker.com/go/dockerfile/rule/{}/"

# name -> (description, URL page or "", experimental)
RULES: dict[str, tuple[str, str, bool]] = {
    "StageNameCasing": ("Stage names should be lowercase", "stage-name-casing", False),
    "FromAsCasing": ("The 'as' keyword should match the case of the 'from' keyword",
                     "from-as-casing", False),
    "NoEmptyContinuation": ("Empty continuation lines will become errors in a future release",
                            "no-empty-continuation", False),
    "ConsistentInstructionCasing": (
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "consistent-instruction-casing", False),
    "DuplicateStageName": ("Stage names should be unique", "duplicate-stage-name", False),
    "ReservedStageName": ("Reserved words should not be used as stage names",
                          "reserved-stage-name", False),
    "JSONArgsRecommended": (
        ("JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related "
         "to OS signals"), "json-args-recommended", False),
    "MaintainerDeprecated": (
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "maintainer-deprecated", False),
    "UndefinedArgInFrom": ("FROM command must use declared ARGs", "undefined-arg-in-from", False),
    "WorkdirRelativePath": (
        ("Relative workdir without an absolute workdir declared within the build can have "
         "unexpected results if the base image changes"), "workdir-relative-path", False),
    "UndefinedVar": ("Variables should be defined before their use", "undefined-var", False),
    "MultipleInstructionsDisallowed": (
        "Multiple instructions of the same type should not be used in the same stage",
        "multiple-instructions-disallowed", False),
    "LegacyKeyValueFormat": ("Legacy key/value format with whitespace separator should not be used",
                             "legacy-key-value-format", False),
    "InvalidBaseImagePlatform": ("Base image platform does not match expected target platform",
                                 "", False),
    "RedundantTargetPlatform": (
        ("Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
         "default behavior"), "redundant-target-platform", False),
    "SecretsUsedInArgOrEnv": ("Sensitive data should not be used in the ARG or ENV commands",
                              "secrets-used-in-arg-or-env", False),
    "InvalidDefaultArgInFrom": (
        "Default value for global ARG results in an empty or invalid base image name",
        "invalid-default-arg-in-from", False),
    "FromPlatformFlagConstDisallowed": ("FROM --platform flag should not use a constant value",
                                        "from-platform-flag-const-disallowed", False),
    "CopyIgnoredFile": ("Attempting to Copy file that is excluded by .dockerignore",
                        "copy-ignored-file", False),
    "InvalidDefinitionDescription": (
        ("Comment for build stage or argument should follow the format: `# <arg/stage name> "
         "<description>`. If this is not intended to be a description comment, add an empty "
         "line or comment between the instruction and the comment."),
        "invalid-definition-description", True),
    "ExposeProtoCasing": ("Protocol in EXPOSE instruction should be lowercase",
                          "expose-proto-casing", False),
    "ExposeInvalidFormat": (
        ("IP address and host-port mapping should not be used in EXPOSE instruction. This will "
         "become an error in a future release"), "expose-invalid-format", False),
}


def rule_url(rule: str) -> str:
    page = RULES[rule][1]
    return _URL.format(page) if page else ""


class CheckOptions:
    """One ``check=`` value: ``skip=<rules>|all;error=true|false;experimental=<rules>|all``."""

    __slots__ = ("error", "experimental", "experimental_all", "skip", "skip_all")

    def __init__(self, *, skip: frozenset[str] = frozenset(), skip_all: bool = False,
                 experimental: frozenset[str] = frozenset(), experimental_all: bool = False,
                 error: bool = False) -> None:
        self.skip = skip
        self.skip_all = skip_all
        self.experimental = experimental
        self.experimental_all = experimental_all
        self.error = error

    def merged(self, other: CheckOptions) -> CheckOptions:
        """These options with a comment's added: skips and experiments add up; whether
        warnings are errors is the file's (BuildKit's WithMergedConfig)."""
        return CheckOptions(skip=self.skip | other.skip, skip_all=self.skip_all or other.skip_all,
                            experimental=self.experimental | other.experimental,
                            experimental_all=self.experimental_all or other.experimental_all,
                            error=self.error)

    def enabled(self, rule: str) -> bool:
        # an experimental rule runs only when asked for, and skip= does not apply to it
        if RULES[rule][2]:
            return self.experimental_all or rule in self.experimental
        return not (self.skip_all or rule in self.skip)


def parse_check_options(text: str) -> CheckOptions:
    """BuildKit's ParseLintOptions; ValueError carries its message."""
    text = text.strip()
    if not text:
        return CheckOptions()
    opts: dict[str, object] = {}
    # at most three parts: a fourth stays glued to the third (and then fails to parse)
    for part in text.split(";", 2):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"invalid check option {go_quote(part)}")
        key = key.strip()
        if key in ("skip", "experimental"):
            value = value.strip()
            if value == "all":
                opts[f"{key}_all"] = True
            else:
                opts[key] = frozenset(r.strip() for r in value.split(","))
        elif key == "error":
            value = value.strip()
            if value not in GO_TRUE and value not in GO_FALSE:
                raise ValueError(f"failed to parse check option {go_quote(part)}: "
                                 f"strconv.ParseBool: parsing {go_quote(value)}: invalid syntax")
            opts["error"] = value in GO_TRUE
        else:
            raise ValueError(f"invalid check option {go_quote(key)}")
    return CheckOptions(**opts)  # type: ignore[arg-type]


class Finding:
    """One warning: the rule, BuildKit's message, and the lines of the instruction."""

    __slots__ = ("end", "line", "message", "rule")

    def __init__(self, rule: str, message: str, line: int, end: int | None = None) -> None:
        self.rule = rule
        self.message = message
        self.line = line
        self.end = end if end is not None else line

    @property
    def short(self) -> str:
        """``Rule: message (line N)``, as buildx shows it."""
        text = f"{self.rule}: {self.message}"
        return f"{text} (line {self.line})" if self.line > 0 else text

    def to_json(self) -> list[object]:
        return [self.rule, self.message, self.line, self.end]

    @classmethod
    def from_json(cls, data: Sequence[object]) -> Finding:
        rule, message, line, end = data
        return cls(str(rule), str(message), int(line), int(end))  # type: ignore[call-overload]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Finding) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.rule, self.message, self.line, self.end))

    def __repr__(self) -> str:
        return f"Finding({self.short!r})"


_DIRECTIVE_NAMES = ("syntax", "escape", "check")


def comment_options(comments: Sequence[str]) -> CheckOptions | None:
    """The options of the first ``check=`` among the comments above an instruction (only
    its first word counts, so ``# check=skip=X // why`` works); None if there is none or
    it does not parse (BuildKit's WithMergedConfigFromComments)."""
    import re

    for comment in comments:
        m = re.match(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*\Z", comment.lstrip(), re.DOTALL)
        if m is None or m.group(1).lower() not in _DIRECTIVE_NAMES:
            continue
        if m.group(1).lower() != "check":
            continue
        try:
            return parse_check_options(m.group(2).split(" ", 1)[0])
        except ValueError:
            return None
    return None


def options_for(directive: str | None, build_args: Mapping[str, str]) -> CheckOptions:
    """The build's options: the ``BUILDKIT_DOCKERFILE_CHECK`` build arg when given (it
    replaces the directive, even empty), else the ``# check=`` directive."""
    from .errors import CheckError

    if "BUILDKIT_DOCKERFILE_CHECK" in build_args:
        text, what = build_args["BUILDKIT_DOCKERFILE_CHECK"], "build-arg:BUILDKIT_DOCKERFILE_CHECK"
    else:
        text, what = directive or "", "check options"
    try:
        return parse_check_options(text)
    except ValueError as exc:
        raise CheckError(f"failed to parse {what}: {exc}",
                         hint="the syntax is check=skip=<rules>|all;error=true|false;"
                              "experimental=<rules>|all") from None


class Linter:
    """Collects the findings of one build under its options. ``on_finding`` (the progress
    display) sees each finding as it is made, in BuildKit's order."""

    def __init__(self, options: CheckOptions,
                 on_finding: Callable[[Finding], None] | None = None) -> None:
        self.options = options
        self.findings: list[Finding] = []
        self.on_finding = on_finding

    def run(self, rule: str, line: int, message: str, *, end: int | None = None,
            options: CheckOptions | None = None) -> None:
        if not (options or self.options).enabled(rule):
            return
        finding = Finding(rule, message, line, end)
        self.findings.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)

    def violation(self) -> str | None:
        """With ``error=true`` and findings: BuildKit's error text naming the rules (in the
        order they were first found)."""
        if not self.options.error or not self.findings:
            return None
        rules = dict.fromkeys(f.rule for f in self.findings)
        return "lint violation found for rules: " + ", ".join(rules)


# -- what is shown ----------------------------------------------------------------------
def unique(findings: Sequence[Finding]) -> list[Finding]:
    """The findings without repeats (the summary's de-duplication, as buildx's)."""
    return list(dict.fromkeys(findings))


def by_line(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.line)


def summary_text(findings: Sequence[Finding], *, debug: bool = False,
                 lines: Sequence[str] | None = None, filename: str = "Dockerfile",
                 color: bool = False) -> str:
    """The end-of-build summary (buildx's printWarnings): a count, then one line a
    warning; with ``debug`` each expanded with its description, link and source."""
    shown = by_line(unique(findings))
    if not shown:
        return ""
    n = len(shown)
    head = f"{n} warning{'s' if n != 1 else ''} found"
    if not debug:
        head += " (use pybuild --debug to expand)"
    head += ":\n"
    if color:
        head = f"\x1b[33m{head}\x1b[0m"
    out = ["\n ", head]
    for finding in shown:
        out.append(f" - {finding.short}\n")
        if not debug:
            continue
        out.append(RULES[finding.rule][0] + "\n")
        url = rule_url(finding.rule)
        if url:
            out.append(f"More info: {url}\n")
        if lines is not None:
            out.append(excerpt(lines, finding.line, finding.end, filename))
        out.append("\n")
    return "".join(out)


def excerpt(lines: Sequence[str], start: int, end: int, filename: str) -> str:
    """The Dockerfile around lines ``start``-``end``, those marked ``>>>`` (BuildKit's
    errdefs Source.Print: two lines of context, four for a single line, at most)."""
    # the source as BuildKit splits it: a final newline leaves an empty last line
    src = list(lines) + [""]
    if start < 1 or start > len(src):
        return ""
    end = min(max(end, start), len(src))
    first, last = start, end
    pad = 2 if end != start else 4
    p = 0
    while p < pad:
        if first > 1:
            first -= 1
            p += 1
        if last != len(src):
            last += 1
            p += 1
        p += 1
    out = [f"{filename}:{start}\n--------------------\n"]
    for i in range(first, last + 1):
        mark = ">>>" if start <= i <= end else "   "
        out.append(f" {i:3d} | {mark} {src[i - 1]}\n")
    out.append("--------------------\n")
    return "".join(out)


def check_report(findings: Sequence[Finding], lines: Sequence[str], filename: str) -> str:
    """What `pybuild build --check` prints on stdout (buildx's lint result printer)."""
    if not findings:
        return "Check complete, no warnings found.\n"
    n = len(findings)
    count = "1 warning has been found!" if n == 1 else f"{n} warnings have been found!"
    out = [f"Check complete, {count}\n"]
    for finding in by_line(findings):
        url = rule_url(finding.rule)
        out.append(f"\nWARNING: {finding.rule}" + (f" - {url}" if url else "") + "\n")
        out.append(finding.message + "\n")
        out.append(excerpt(lines, finding.line, finding.end, filename))
    return "".join(out)
