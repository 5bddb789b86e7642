"""Parsing a Dockerfile: text -> untyped nodes -> typed instructions. No I/O.

The three layers of buildkit's frontend, each testable alone:
``parse_lines`` (the Lark grammar: lines, continuations, directives, heredocs) ->
``parse_args`` (keyword, --flags, argument words: ``parse_nodes`` stops here and
``builder.dump`` prints these in buildkit's format) -> ``parse_typed`` (the instruction
classes of ``builder.instructions``, with buildkit's checks). Every failure is a ParseError
naming the line.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import ParseError, SourceRange
from .parse_args import LineError, Node, node_from_line
from .parse_go import printable, to_text
from .parse_heredoc import Heredoc
from .parse_lines import scan_lines

if TYPE_CHECKING:
    from .instructions import Dockerfile

__all__ = ["Node", "ParsedNodes", "parse_dockerfile", "parse_nodes"]


@dataclass(frozen=True, slots=True)
class ParsedNodes:
    """The untyped parse (buildkit's AST): what ``builder.dump.dump_buildkit`` prints."""

    nodes: tuple[Node, ...]
    directives: tuple[tuple[str, str], ...]
    escape: str
    warnings: tuple[str, ...]
    lines: tuple[str, ...]
    filename: str = "Dockerfile"
    # the last continued line of each instruction with empty continuation lines (where
    # BuildKit's NoEmptyContinuation check points)
    empty_continuations: tuple[int, ...] = ()

    def source_line(self, n: int) -> str:
        return self.lines[n - 1] if 0 < n <= len(self.lines) else ""


def _column(line: str, needle: str) -> int:
    """Where ``needle`` starts in ``line`` (for the caret), else the first non-blank."""
    at = line.find(needle) if needle else -1
    return at if at >= 0 else len(line) - len(line.lstrip())


def parse_nodes(text: str | bytes, *, filename: str = "Dockerfile") -> ParsedNodes:
    """The untyped parse of ``text``; ParseError where buildkit's parser fails."""
    raw = to_text(text)
    source = raw.removeprefix("\ufeff")
    # kept printable: errors anywhere in pybuild quote these lines to a terminal
    lines = tuple(printable(line.rstrip("\r")) for line in source.split("\n"))
    if lines and lines[-1] == "" and source.endswith("\n"):
        lines = lines[:-1]
    scan = scan_lines(raw, filename=filename)
    nodes: list[Node] = []
    warnings: list[str] = []
    empty: list[int] = []
    for logical in scan.lines:
        try:
            node = node_from_line(logical.text, scan.escape, start=logical.start, end=logical.end)
        except LineError as exc:
            line = lines[logical.start - 1] if logical.start <= len(lines) else ""
            raise ParseError(printable(str(exc)), location=SourceRange(
                logical.start, logical.end, _column(line, ""), filename),
                source_line=line) from None
        if logical.heredocs:
            node = replace(node, heredocs=tuple(
                Heredoc(word.name, body, word.expand, word.chomp, word.fd)
                for word, body in logical.heredocs))
        if logical.empty_continuation:
            warnings.append(f"Empty continuation line found in: {logical.text}")
            # before any heredoc body: each body line, and its terminator, comes after
            empty.append(logical.end - sum(body.count("\n") + 1 for _, body in logical.heredocs))
        nodes.append(node)
    if not nodes:
        last = max(len(lines), 1)
        raise ParseError("file with no instructions",
                         location=SourceRange(last, last, 0, filename),
                         source_line=lines[-1] if lines else "",
                         hint="A Dockerfile needs at least one instruction, such as FROM.")
    return ParsedNodes(tuple(nodes), scan.directives, scan.escape, tuple(warnings), lines,
                       filename, tuple(empty))


def parse_dockerfile(text: str | bytes, *, filename: str = "Dockerfile") -> Dockerfile:
    """Parse ``text`` into typed instructions; ParseError (with line and caret) if invalid."""
    from .instructions import Dockerfile
    from .parse_typed import to_instruction

    parsed = parse_nodes(text, filename=filename)
    instructions = []
    for node in parsed.nodes:
        line = parsed.source_line(node.start)
        rng = SourceRange(node.start, node.end, _column(line, ""), filename)
        try:
            instructions.append(to_instruction(node, rng))
        except LineError as exc:
            message = printable(str(exc))
            needle = ""
            if message.startswith(("unknown flag: ", "duplicate flag specified: ",
                                   "missing a value on flag: ")):
                needle = message.split(": ", 1)[1].split(" ", 1)[0]
            elif message.startswith("expecting boolean value for flag "):
                needle = message.split()[5].rstrip(",")
            raise ParseError(message, location=replace(rng, column=_column(line, needle)),
                             source_line=line) from None
    return Dockerfile(tuple(instructions), parsed.directives, parsed.escape, parsed.warnings,
                      parsed.lines, filename, parsed.empty_continuations)
