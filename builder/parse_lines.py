"""Dockerfile text -> logical instruction lines, with the Lark grammar (grammar/dockerfile.lark).

Owns loading the grammar (its LALR tables are built once and cached on disk), the post-lexer
that settles what depends on context (parser directives, the escape token, heredoc bodies),
and turning the parse tree into ``LogicalLine`` values: the joined instruction text, its
1-based line range and its heredoc bodies. No I/O but the parser cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ParseError, SourceRange
from .parse_args import HEREDOC_KEYWORDS, split_command
from .parse_go import GO_SPACES, go_lower, parse_json_array
from .parse_heredoc import HeredocWord, ShellSyntaxError, heredoc_words
from .resources import grammar_path

if TYPE_CHECKING:
    from lark import Lark, Token

__all__ = ["LogicalLine", "Scan", "scan_lines", "MAX_LINE_BYTES"]

# bufio.Scanner's token limit in the reference: longer lines are an error there.
MAX_LINE_BYTES = 65535
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\x0c\r ]*=[\t\n\x0c\r ]*(.+?)[\t\n\x0c\r ]*\Z")
_CONTINUATION = {
    "\\": re.compile(r"(?:([^\\])\\[ \t]*|^\\[ \t]*)\Z"),
    "`": re.compile(r"(?:([^`])`[ \t]*|^`[ \t]*)\Z"),
}


@dataclass(frozen=True, slots=True)
class LogicalLine:
    text: str  # continuation lines joined, as the reference joins them
    start: int
    end: int
    heredocs: tuple[tuple[HeredocWord, str], ...]  # (word, raw body)
    empty_continuation: bool


@dataclass(frozen=True, slots=True)
class Scan:
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


class _PostLex:
    """Re-tags the line tokens by context; see the grammar's header comment."""

    always_accept = ("CONT_BS", "CONT_BT")

    def __init__(self) -> None:
        self.state: _State | None = None

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        from lark import Token

        st = self.state
        assert st is not None
        header = True
        piece: list[str] = []
        in_cont = empty_cont = False
        start_line = 0
        mine = other = ""
        for tok in stream:
            kind = tok.type
            if header:
                directive = self._directive(tok, st) if kind == "COMMENT_LINE" else None
                if directive is not None:
                    yield Token.new_borrow_pos("DIRECTIVE", tok, tok)
                    continue
                header = False
                mine, other = ("CONT_BS", "CONT_BT") if st.escape == "\\" else ("CONT_BT", "CONT_BS")
            if kind == mine:
                kind = "CONT"
            elif kind == other:
                kind = "LINE"
            if kind in ("COMMENT_LINE", "BLANK_LINE"):
                empty_cont = empty_cont or (in_cont and kind == "BLANK_LINE")
                yield tok
                continue
            text = _strip_newline(str(tok))
            if not in_cont:
                text = text.lstrip(GO_SPACES)
                start_line = tok.line
            if kind == "CONT":
                text = _CONTINUATION[st.escape].sub(r"\1", text)
            piece.append(text)
            yield Token.new_borrow_pos(kind, tok, tok)
            if kind == "CONT":
                in_cont = True
                continue
            yield from self._finish(st, piece, empty_cont, start_line, stream)
            piece, in_cont, empty_cont = [], False, False
        if in_cont:
            yield Token("EOF_END", "")
            yield from self._finish(st, piece, empty_cont, start_line, stream)

    @staticmethod
    def _directive(tok: Token, st: _State) -> tuple[str, str] | None:
        line = _strip_newline(str(tok)).lstrip(GO_SPACES)
        m = _DIRECTIVE.match(line[1:].lstrip(GO_SPACES))
        if m is None or m.group(1).lower() not in ("syntax", "escape", "check"):
            return None
        name, value = m.group(1).lower(), m.group(2)
        where = SourceRange(tok.line, tok.line, 0, st.filename)
        if any(name == seen for seen, _ in st.directives):
            raise ParseError(f"only one {name} parser directive can be used", location=where,
                             source_line=st.source[tok.line - 1])
        if name == "escape":
            if value not in ("\\", "`"):
                raise ParseError(f"invalid escape token '{value}' does not match ` or \\",
                                 location=where, source_line=st.source[tok.line - 1])
            st.escape = value
        st.directives.append((name, value))
        return name, value

    def _finish(self, st: _State, piece: list[str], empty_cont: bool, start_line: int,
                stream: Iterator[Token]) -> Iterator[Token]:
        from lark import Token

        line = "".join(piece)
        docs = _heredocs_of(line, st, start_line)
        st.logical.append((line, empty_cont, docs, start_line))
        for doc in docs:
            yield Token("HEREDOC_START", doc.name)
            for tok in stream:
                candidate = _strip_newline(str(tok))
                if doc.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == doc.name:
                    yield Token.new_borrow_pos("HEREDOC_END", tok, tok)
                    break
                yield Token.new_borrow_pos("HEREDOC_LINE", tok, tok)


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
        raise ParseError(str(exc), location=SourceRange(start_line, start_line, 0, st.filename),
                         source_line=st.source[start_line - 1]) from None


_lock = threading.Lock()
_parser: Lark | None = None
_postlex = _PostLex()


def _cache_dirs() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(base) / "pybuild", Path(tempfile.gettempdir()) / f"pybuild-{os.getuid()}"]


def _load_parser() -> Lark:
    """The LALR parser, its tables from the cache when a previous run left them there."""
    global _parser
    if _parser is not None:
        return _parser
    from lark import Lark, __version__ as lark_version

    grammar = grammar_path().read_text(encoding="utf-8")
    options: dict[str, Any] = {"parser": "lalr", "lexer": "basic", "postlex": _postlex,
                               "maybe_placeholders": False}
    tag = hashlib.sha256((lark_version + "\0" + grammar).encode()).hexdigest()[:20]
    for folder in _cache_dirs():
        target = folder / f"dockerfile-{tag}.lark"
        try:
            if target.is_file():
                _parser = Lark(grammar, cache=str(target), **options)
                return _parser
            folder.mkdir(parents=True, exist_ok=True)
            fd, aside = tempfile.mkstemp(dir=folder, prefix=".dockerfile-", suffix=".tmp")
            os.close(fd)
            os.unlink(aside)  # Lark writes the file itself; it must not exist yet
            _parser = Lark(grammar, cache=aside, **options)
            if os.path.isfile(aside):
                os.replace(aside, target)  # never a half-written cache under the real name
            return _parser
        except OSError:
            continue
    _parser = Lark(grammar, **options)
    return _parser


def _check_line_lengths(text: str, filename: str) -> None:
    if len(text) <= MAX_LINE_BYTES:
        return
    for m in re.finditer(r"[^\n]{%d,}" % (MAX_LINE_BYTES // 4 + 1), text):
        if len(m.group(0).encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            line_no = text.count("\n", 0, m.start()) + 1
            raise ParseError(
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                location=SourceRange(line_no, line_no, 0, filename),
                source_line=m.group(0)[:200],
            )


def scan_lines(text: str, *, filename: str = "Dockerfile") -> Scan:
    """Logical lines of ``text`` (already decoded, BOM removed)."""
    from lark.exceptions import UnexpectedInput

    _check_line_lengths(text, filename)
    source = text.split("\n")
    parser = _load_parser()
    with _lock:
        state = _postlex.state = _State(filename, source)
        try:
            tree = parser.parse(text) if text else None
        except UnexpectedInput as exc:
            raise _syntax_error(exc, state) from None
        finally:
            _postlex.state = None
    lines: list[LogicalLine] = []
    children = tree.children if tree is not None else []
    instructions = [c for c in children if getattr(c, "data", None) == "instruction"]
    for node, (joined, empty_cont, docs, _) in zip(instructions, state.logical):
        tokens = [t for t in node.scan_values(lambda v: True) if getattr(t, "line", None)]
        bodies = []
        for sub, doc in zip((c for c in node.children if getattr(c, "data", None) == "heredoc"),
                            docs):
            bodies.append((doc, "".join(str(t) for t in sub.children
                                        if getattr(t, "type", "") == "HEREDOC_LINE")))
        lines.append(LogicalLine(joined, tokens[0].line, max(t.line for t in tokens),
                                 tuple(bodies), empty_cont))
    return Scan(tuple(lines), tuple(state.directives), state.escape)


def _syntax_error(exc: Any, state: _State) -> ParseError:
    """The grammar can only reject an unterminated heredoc (the post-lexer opened one and the
    text ended); name the instruction that opened it."""
    last = state.logical[-1] if state.logical else None
    if last is not None and last[2]:
        start = last[3]
        message = "unterminated heredoc"
    else:
        start = getattr(exc, "line", 1) if isinstance(getattr(exc, "line", None), int) else 1
        message = f"syntax error: {exc}"
    start = min(max(start, 1), len(state.source))
    return ParseError(message, location=SourceRange(start, len(state.source), 0, state.filename),
                      source_line=state.source[start - 1])
