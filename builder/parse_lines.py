"""Dockerfile text -> logical instruction lines, with the grammar (grammar/dockerfile.lark).

Owns the post-lexer that settles what depends on context (parser directives, the escape
token, heredoc bodies) and turning the parse tree into ``LogicalLine`` values: the joined
instruction text, its 1-based line range and its heredoc bodies. The grammar's lexer and
LALR parser come from ``parse_lalr``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ParseError, SourceRange
from .parse_args import HEREDOC_KEYWORDS, split_command
from .parse_go import GO_SPACES, go_lower, parse_json_array, printable
from .parse_heredoc import HeredocWord, ShellSyntaxError, heredoc_words
from .parse_lalr import Tables, Tok, Tree, UnexpectedToken, load_tables, parse_tokens, tokenize

__all__ = ["MAX_LINE_BYTES", "LogicalLine", "Scan", "scan_lines"]

# bufio.Scanner's token limit in the reference: longer lines are an error there.
MAX_LINE_BYTES = 65535
_DIRECTIVE = r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\x0c\r ]*=[\t\n\x0c\r ]*(.+?)[\t\n\x0c\r ]*\Z"  # compiled where used


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One instruction's text, continuation lines joined, with its heredocs."""

    text: str  # continuation lines joined, as the reference joins them
    start: int
    end: int
    heredocs: tuple[tuple[HeredocWord, str], ...]  # (word, raw body)
    empty_continuation: bool


@dataclass(frozen=True, slots=True)
class Scan:
    """A Dockerfile read into logical lines, with its parser directives."""

    lines: tuple[LogicalLine, ...]
    directives: tuple[tuple[str, str], ...]
    escape: str


def _strip_newline(s: str) -> str:
    return s.rstrip("\r\n")


class _State:
    """What the post-lexer learns while one text is lexed."""

    def __init__(self, filename: str, source: list[str]) -> None:
        self.filename = filename
        self.source = source
        self.escape = "\\"
        self.directives: list[tuple[str, str]] = []
        # per instruction: joined text, had empty continuation lines, heredocs, first line
        self.logical: list[tuple[str, bool, list[HeredocWord], int]] = []


_ALWAYS_ACCEPT = ("CONT_BS", "CONT_BT")  # lexed, then re-tagged: not in any rule


def _post_lex(stream: Iterator[Tok], st: _State) -> Iterator[Tok]:
    """Re-tags the line tokens by context; see the grammar's header comment."""
    header = True
    piece: list[str] = []
    in_cont = empty_cont = False
    start_line = 0
    mine = other = ""
    for kind, value, line_no in stream:
        if header:
            if kind == "COMMENT_LINE" and _directive(value, line_no, st):
                yield ("DIRECTIVE", value, line_no)
                continue
            header = False
            mine, other = ("CONT_BS", "CONT_BT") if st.escape == "\\" else ("CONT_BT", "CONT_BS")
        if kind == mine:
            kind = "CONT"
        elif kind == other:
            kind = "LINE"
        if kind == "COMMENT_LINE" or kind == "BLANK_LINE":
            empty_cont = empty_cont or (in_cont and kind == "BLANK_LINE")
            yield (kind, value, line_no)
            continue
        text = value.rstrip("\r\n")
        if not in_cont:
            text = text.lstrip(GO_SPACES)
            start_line = line_no
        if kind == "CONT":
            # the lexer matched `escape [ \t]*` at the end: drop them (what the reference's
            # continuation regex replacement does, without a regex per line)
            text = text.rstrip(" \t")[:-1]
        piece.append(text)
        yield (kind, value, line_no)
        if kind == "CONT":
            in_cont = True
            continue
        yield from _finish(st, piece, empty_cont, start_line, stream)
        piece, in_cont, empty_cont = [], False, False
    if in_cont:
        yield ("EOF_END", "", 0)
        yield from _finish(st, piece, empty_cont, start_line, stream)


def _directive(value: str, line_no: int, st: _State) -> bool:
    """Records a parser directive (syntax, escape, check) if this comment line is one."""
    line = value.rstrip("\r\n").lstrip(GO_SPACES)
    m = re.match(_DIRECTIVE, line[1:].lstrip(GO_SPACES))
    if m is None or m.group(1).lower() not in ("syntax", "escape", "check"):
        return False
    name, text = m.group(1).lower(), m.group(2)
    where = SourceRange(line_no, line_no, 0, st.filename)
    if any(name == seen for seen, _ in st.directives):
        raise ParseError(f"only one {name} parser directive can be used", location=where,
                         source_line=printable(st.source[line_no - 1]))
    if name == "escape":
        if text not in ("\\", "`"):
            raise ParseError(f"invalid escape token '{printable(text)}' does not match ` or \\",
                             location=where, source_line=printable(st.source[line_no - 1]))
        st.escape = text
    st.directives.append((name, text))
    return True


def _finish(st: _State, piece: list[str], empty_cont: bool, start_line: int,
            stream: Iterator[Tok]) -> Iterator[Tok]:
    """An instruction's last line went by: record it, then lex its heredoc bodies."""
    line = "".join(piece)
    docs = _heredocs_of(line, st, start_line)
    st.logical.append((line, empty_cont, docs, start_line))
    for doc in docs:
        yield ("HEREDOC_START", doc.name, 0)
        for kind, value, line_no in stream:
            candidate = value.rstrip("\r\n")
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                yield ("HEREDOC_END", value, line_no)
                break
            yield ("HEREDOC_LINE", value, line_no)


def _heredocs_of(line: str, st: _State, start_line: int) -> list[HeredocWord]:
    """Heredocs open only on RUN/COPY/ADD (also under ONBUILD) in shell form (canContainHeredoc)."""
    if "<<" not in line:
        return []
    keyword, _, rest = split_command(line, st.escape)
    name = go_lower(keyword)
    if name == "onbuild":
        keyword, _, rest = split_command(rest, st.escape)
        name = go_lower(keyword)
    if name not in HEREDOC_KEYWORDS:
        return []
    try:
        if rest and parse_json_array(rest) is not None:
            return []
    except ValueError:
        return []  # the argument parser reports the bad JSON
    try:
        return heredoc_words(line)
    except ShellSyntaxError as exc:
        raise ParseError(printable(str(exc)), location=SourceRange(start_line, start_line, 0, st.filename),
                         source_line=printable(st.source[start_line - 1])) from None


_tables: Tables | None = None


def _get_tables() -> Tables:
    global _tables
    if _tables is None:
        _tables = load_tables(_ALWAYS_ACCEPT)
    return _tables


def _check_line_lengths(text: str, filename: str) -> None:
    if len(text) <= MAX_LINE_BYTES:
        return
    # a line over the limit in bytes has over a quarter of it in characters
    for m in re.finditer(f"[^\n]{{{MAX_LINE_BYTES // 4 + 1},}}", text):
        if len(m.group(0).encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            line_no = text.count("\n", 0, m.start()) + 1
            raise ParseError(
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                location=SourceRange(line_no, line_no, 0, filename),
                source_line=printable(m.group(0)[:200].removeprefix("\ufeff")),
            )


def scan_lines(text: str, *, filename: str = "Dockerfile") -> Scan:
    """Logical lines of ``text`` (already decoded). A leading byte-order mark is dropped, but
    only after the line-length check: buildkit's line scanner reads it as part of line 1."""
    _check_line_lengths(text, filename)
    text = text.removeprefix("\ufeff")
    source = text.split("\n")
    tables = _get_tables()
    state = _State(filename, source)
    try:
        tree = parse_tokens(tables, _post_lex(tokenize(tables, text), state))
    except UnexpectedToken as exc:
        raise _syntax_error(exc, state) from None
    lines: list[LogicalLine] = []
    instructions = [c for c in tree.children if isinstance(c, Tree)]
    for node, (joined, empty_cont, docs, start) in zip(instructions, state.logical):
        end = start
        bodies = []
        for child in node.children:
            if isinstance(child, Tree):  # a heredoc
                end = child.children[-1][2]
                bodies.append("".join(t[1] for t in child.children if t[0] == "HEREDOC_LINE"))
            elif child[2]:
                end = child[2]
        lines.append(LogicalLine(joined, start, end, tuple(zip(docs, bodies)), empty_cont))
    return Scan(tuple(lines), tuple(state.directives), state.escape)


def _syntax_error(exc: UnexpectedToken, state: _State) -> ParseError:
    """The grammar can only reject an unterminated heredoc (the post-lexer opened one and the
    text ended); name the instruction that opened it."""
    last = state.logical[-1] if state.logical else None
    if last is not None and last[2]:
        start = last[3]
        message = "unterminated heredoc"
    else:
        start = exc.token[2] or len(state.source)
        message = f"syntax error: {exc}"
    start = min(max(start, 1), len(state.source))
    return ParseError(printable(message), location=SourceRange(start, len(state.source), 0, state.filename),
                      source_line=printable(state.source[start - 1]))
