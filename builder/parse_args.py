"""One logical Dockerfile line -> an untyped Node: keyword, --flags, argument words.

Owns buildkit's per-instruction argument rules (which instructions split words, which keep
one argument, JSON exec form, ENV/LABEL key=value triples, ONBUILD's nested line) and the
``Node`` value that ``builder.dump`` prints. Word values stay exactly as written: quotes and
variables are for ``builder.expand`` to handle later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .parse_go import GO_SPACES, NotStringArray, go_lower, go_quote, go_trim_space, parse_json_array
from .parse_heredoc import Heredoc

__all__ = ["HEREDOC_KEYWORDS", "LineError", "Node", "node_from_line", "split_command"]

HEREDOC_KEYWORDS = frozenset({"add", "copy", "run"})

# reWhitespace of the reference: only these split FROM/EXPOSE/COPY words and the keyword.
_WHITESPACE = re.compile("[\t\x0b\x0c\r ]+")
_BYTE_SPACES = frozenset(b"\t\n\x0b\x0c\r \x85\xa0")  # unicode.IsSpace(rune(byte))
_GO_SPACE_RUN = re.compile(f"[{GO_SPACES}]+")


class LineError(ValueError):
    """An instruction line the parser refuses; parse.py adds the location."""


@dataclass(frozen=True, slots=True)
class Node:
    """One instruction as the reference parser's AST has it (before typing)."""

    keyword: str  # as written
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    child: Node | None = None  # ONBUILD's nested instruction
    json: bool = False  # exec (JSON array) form
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""
    start: int = 0
    end: int = 0
    warnings: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The keyword lower-cased the way Go does it (dispatch and dump use this)."""
        return go_lower(self.keyword)


def split_command(line: str, escape: str) -> tuple[str, list[str], str]:
    """(keyword, flags, rest): buildkit's splitCommand + extractBuilderFlags."""
    parts = _WHITESPACE.split(go_trim_space(line), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1], escape)
    return parts[0], flags, go_trim_space(rest)


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading ``--flag`` words, unquoted. Byte by byte, like the reference (it reads each
    byte as a rune, so non-ASCII bytes in flags come out as Latin-1 characters)."""
    if not line.startswith("--") and not line[:1].isspace():
        return line, []
    data = line.encode("utf-8", "surrogateescape")
    esc = ord(escape)
    words: list[str] = []
    word: list[int] = []
    pos, n = 0, len(data)
    in_word = in_quote = blank_ok = False
    quote = 0
    while pos <= n:
        ch = data[pos] if pos < n else -1
        if not in_word:
            if pos == n:
                break
            if ch in _BYTE_SPACES:
                pos += 1
                continue
            if ch != 0x2D or pos + 1 == n or data[pos + 1] != 0x2D:
                return data[pos:].decode("utf-8", "surrogateescape"), words
            in_word = True
        if pos == n:
            text = "".join(map(chr, word))
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if not in_quote:
            if ch in _BYTE_SPACES:
                text = "".join(map(chr, word))
                in_word = False
                if text == "--":
                    return data[pos:].decode("utf-8", "surrogateescape"), words
                if blank_ok or text:
                    words.append(text)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in (0x22, 0x27):
                quote, blank_ok, in_quote = ch, True, True
                pos += 1
                continue
            if ch == esc:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = data[pos]
            word.append(ch)
            pos += 1
            continue
        if ch == quote:
            in_quote = False
            pos += 1
            continue
        if ch == esc:
            if pos + 1 == n:
                in_quote = False
                pos += 1
                continue
            pos += 1
            ch = data[pos]
        word.append(ch)
        pos += 1
    return "", words


def parse_words(rest: str, escape: str) -> list[str]:
    """buildkit's parseWords: quote-aware words, quotes and escapes kept in the words."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        # nothing to keep together: the words are the runs of non-space characters
        words = [w for w in _GO_SPACE_RUN.split(rest) if w]
        if rest.isascii():
            return words
        return [re.sub("[\udc80-\udcff]", "\ufffd", w) for w in words]
    words = []
    buf: list[str] = []
    phase = 0  # 0 in spaces, 1 in word, 2 in quote
    quote = ""
    blank_ok = False
    i, n = 0, len(rest)
    while True:
        ch = rest[i] if i < n else ""
        if phase == 0:
            if i == n:
                break
            if ch in GO_SPACES:
                i += 1
                continue
            phase = 1
        if i == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == 1:
            if ch in GO_SPACES:
                phase = 0
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, 2
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                ch = rest[i]
            buf.append(ch)
            i += 1
            continue
        if ch == quote:
            phase = 1
        if ch == escape and quote != "'":
            if i + 1 == n:
                phase = 1
                i += 1
                continue
            i += 1
            buf.append(ch)
            ch = rest[i]
        buf.append(ch)
        i += 1
    # Go decodes runes: a byte that is not UTF-8 comes back as U+FFFD.
    return [re.sub("[\udc80-\udcff]", "\ufffd", w) for w in words] if not rest.isascii() else words


def _name_val(rest: str, key: str, escape: str) -> tuple[str, ...]:
    words = parse_words(rest, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise LineError(f"{key} must have two arguments")
        return (parts[0], parts[1], "")
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise LineError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        k, v = word.split("=", 1)
        out += [k, v, "="]
    return tuple(out)


def _maybe_json(rest: str, *, split: bool) -> tuple[tuple[str, ...], bool]:
    try:
        values = parse_json_array(rest)
    except NotStringArray as exc:
        raise LineError(str(exc)) from None
    if values is not None:
        return tuple(values), True
    if split:
        return _split_ws(rest), False
    return ((rest,) if rest else ()), False


def _split_ws(rest: str) -> tuple[str, ...]:
    return tuple(_WHITESPACE.split(rest)) if rest else ()


def _health(rest: str) -> tuple[tuple[str, ...], bool]:
    data = rest.encode("utf-8", "surrogateescape")
    sep = 0
    while sep < len(data) and data[sep] not in _BYTE_SPACES:
        sep += 1
    nxt = sep
    while nxt < len(data) and data[nxt] in _BYTE_SPACES:
        nxt += 1
    if sep == 0:
        return (), False
    typ = data[:sep].decode("utf-8", "surrogateescape")
    cmd, is_json = _maybe_json(data[nxt:].decode("utf-8", "surrogateescape"), split=False)
    return (typ, *cmd), is_json


def node_from_line(line: str, escape: str, *, start: int = 0, end: int = 0) -> Node:
    """Dispatch the logical line to its argument rule (newNodeFromLine of the reference)."""
    keyword, flags, rest = split_command(line, escape)
    name = go_lower(keyword)
    child: Node | None = None
    is_json = False
    args: tuple[str, ...]
    if name in ("run", "cmd", "entrypoint", "shell"):
        args, is_json = _maybe_json(rest, split=False) if rest else ((), False)
    elif name in ("add", "copy", "volume"):
        args, is_json = _maybe_json(rest, split=True)
    elif name in ("from", "expose"):
        args = _split_ws(rest)
    elif name in ("maintainer", "user", "workdir", "stopsignal"):
        args = (rest,) if rest else ()
    elif name in ("env", "label"):
        args = _name_val(rest, "ENV" if name == "env" else "LABEL", escape)
    elif name == "arg":
        args = tuple(parse_words(rest, escape))
    elif name == "healthcheck":
        args, is_json = _health(rest)
    elif name == "onbuild":
        args = ()
        if rest:
            child = node_from_line(rest, escape, start=start, end=end)
    else:
        args = ("",)  # the reference keeps unknown instructions with one empty argument
    return Node(keyword=keyword, flags=tuple(flags), args=args, child=child, json=is_json,
                original=line, start=start, end=end)
