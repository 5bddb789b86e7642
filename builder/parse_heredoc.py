"""Finding heredoc words (`<<EOF`, `<<-'EOF'`, `3<<"END"`) in an instruction line.

Owns the reference's rules for which words open a heredoc, the heredoc's name, whether its
body is expanded (not when any part of the word is quoted) and whether leading tabs are
chomped (`<<-`). The reference finds the words with its shell lexer in a "raw" mode (quotes
and escapes kept, unset variables left as written, empty environment); the small lexer here
does just that much, with the same errors, so the same lines get heredocs.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .parse_go import GO_SPACES

__all__ = ["Heredoc", "HeredocWord", "ShellSyntaxError", "heredoc_words", "parse_heredoc_word"]

# The reference's reHeredoc: Go's \d is ASCII, \s is [\t\n\f\r ], $ is the end of text.
_HEREDOC = re.compile(r"([0-9]*)<<(-?)[\t\n\x0c\r ]*([^<]*)\Z")
_SPECIAL_PARAMS = "@*#?-$!0"
# compiled where used (re keeps them): most Dockerfiles have no heredoc
_LEADING_TABS = r"(?m)^\t+"
_SPACE_RUN = f"[{GO_SPACES}]+"


class ShellSyntaxError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Heredoc:
    """A here-document: ``content`` is the body as written (lines with their newlines)."""

    name: str
    content: str
    expand: bool = True  # False when the word was quoted (<<'EOF'): no variable expansion
    chomp: bool = False  # <<-EOF: leading tabs are stripped from the body
    fd: int | None = None  # 3<<EOF

    @property
    def data(self) -> str:
        """The body as the build uses it (leading tabs removed for ``<<-``)."""
        return re.sub(_LEADING_TABS, "", self.content) if self.chomp else self.content


@dataclass(frozen=True, slots=True)
class HeredocWord:
    """A heredoc's opening word (<<[-]["]NAME["]) as read."""

    name: str
    expand: bool
    chomp: bool
    fd: int | None


class _Words:
    """wordsStruct of the reference, sharing one buffer with nested calls like it does."""

    def __init__(self, buf: list[str]) -> None:
        self.buf = buf
        self.words: list[str] = []
        self.in_word = False

    def _flush(self) -> None:
        text = "".join(self.buf)
        if text:
            self.words.append(text)
            self.buf.clear()
            self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in GO_SPACES:
            if self.in_word:
                self._flush()
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        """add_char for every character, in bulk (expansions can be long and nested)."""
        for i, part in enumerate(re.split(_SPACE_RUN, s)):
            if i and self.in_word:
                self._flush()
            if part:
                self.buf.append(part)
                self.in_word = True

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def get_words(self) -> list[str]:
        self._flush()
        return self.words


class _Lexer:
    """ProcessWords with SkipUnsetEnv and no variables: splits, never substitutes."""

    def __init__(self, text: str, *, raw_quotes: bool, raw_escapes: bool) -> None:
        text = re.sub("[\udc80-\udcff]", "\ufffd", text)  # Go's scanner reads bad bytes as U+FFFD
        self.s = text.removeprefix("\ufeff")
        self.i = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.escape = "\\"
        self.shared: list[str] = []

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def words(self) -> list[str]:
        return self.stop_on("", self.raw_escapes)[1]

    def stop_on(self, stop: str, raw_escapes: bool, *, split: bool = True) -> tuple[str, list[str]]:
        """processStopOn. Nested calls (``split=False``) only need the text; what their word
        splitting would leave behind is an empty shared buffer, so they just clear it."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        self.shared.clear()
        try:
            result: list[str] = []
            words = _Words(self.shared) if split else None
            found = False
            while self.peek():
                ch = self.peek()
                if stop and ch == stop:
                    self.next()
                    found = True
                    break
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    if words:
                        words.add_string(tmp)
                elif ch in "<'\"":
                    tmp = self.heredoc_op() if ch == "<" else self.quoted(ch)
                    result.append(tmp)
                    if words:
                        words.add_raw_string(tmp)
                else:
                    ch = self.next()
                    if ch == self.escape:
                        if self.raw_escapes:
                            if words:
                                words.add_raw_char(ch)
                            result.append(ch)
                        ch = self.next()
                        if not ch:
                            break
                        if words:
                            words.add_raw_char(ch)
                    elif words:
                        words.add_char(ch)
                    result.append(ch)
            if stop and not found:
                raise ShellSyntaxError(
                    f"unexpected end of statement while looking for matching {stop}")
            if words is None:
                self.shared.clear()
                return "".join(result), []
            return "".join(result), words.get_words()
        finally:
            self.raw_escapes = saved

    def quoted(self, q: str) -> str:
        first = self.next()
        out = [first] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                kind = "single-quote" if q == "'" else "double-quote"
                raise ShellSyntaxError(f"unexpected end of statement while looking for matching {kind}")
            if ch == q:
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if q == '"' and ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if q == '"' and ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def heredoc_op(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        space = []
        while self.peek() and self.peek() in "\t\r ":
            space.append(self.next())
        return "<<" + "".join(space)

    def name(self) -> str:
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if not out and ch.isdecimal():
                while self.peek() and self.peek().isdecimal():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name if name else "$"
        self.next()
        if not self.peek():
            raise ShellSyntaxError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ShellSyntaxError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return "${" + name + "}"
        chs = ch
        if ch == ":":
            ch = self.next()
            chs += ch or "\ufffd"
            if ch and ch in "#%":
                raise ShellSyntaxError(f"unsupported modifier ({chs}) in substitution")
        elif not ch or ch not in "+-?#%/":
            raise ShellSyntaxError(f"unsupported modifier ({chs or chr(0xFFFD)}) in substitution")
        if ch == "/" and chs == "/":
            if self.peek() == "/":
                self.next()
            pattern = self._until("/", "syntax error: missing '/' in ${}")
            replacement = self._until("}", "syntax error: missing '}'")
            return "${" + f"{name}/{pattern}/{replacement}" + "}"
        word = self._until("}", "syntax error: missing '}'", raw=bool(ch) and ch in "#%")
        return "${" + name + chs + word + "}"

    def _until(self, stop: str, eof_message: str, *, raw: bool = True) -> str:
        try:
            return self.stop_on(stop, raw, split=False)[0]
        except ShellSyntaxError:
            if not self.peek():
                raise ShellSyntaxError(eof_message) from None
            raise


@contextmanager
def _deep_enough(depth: int) -> Iterator[None]:
    """Nested ${a-${b-...}} recurse once per level, like the reference's lexer; a line may hold
    ~16,000 levels. Python 3.11 runs Python-to-Python calls without using the C stack, so a
    higher limit for this call is safe."""
    old = sys.getrecursionlimit()
    if depth > old // 4:
        sys.setrecursionlimit(max(old, depth * 4 + 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _lex(text: str, **modes: bool) -> list[str]:
    with _deep_enough(text.count("${")):
        return _Lexer(text, **modes).words()


def parse_heredoc_word(word: str) -> HeredocWord | None:
    """The heredoc a single word opens (ParseHeredoc), or None if it opens none."""
    m = _HEREDOC.match(word)
    if m is None or not m.group(3):
        return None
    rest = m.group(3)
    words = _lex(rest, raw_quotes=False, raw_escapes=False)
    if len(words) != 1:
        return None
    raw = _lex(rest, raw_quotes=True, raw_escapes=False)
    if len(raw) != len(words):
        raise ShellSyntaxError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    digits = m.group(1)
    return HeredocWord(name=words[0], expand=quotes == raw_quotes, chomp=m.group(2) == "-",
                       fd=min(int(digits), (1 << 64) - 1) if digits else None)


def heredoc_words(line: str) -> list[HeredocWord]:
    """Every heredoc the line opens, in order (heredocsFromLine). A line the shell lexer
    cannot split (an open quote) opens none, as in the reference."""
    try:
        words = _lex(line, raw_quotes=True, raw_escapes=True)
    except ShellSyntaxError:
        return []
    docs = []
    for word in words:
        doc = parse_heredoc_word(word)
        if doc is not None:
            docs.append(doc)
    return docs
