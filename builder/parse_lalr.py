"""The grammar's LALR(1) parser: tables built by Lark once, cached, then run without Lark.

Owns turning grammar/dockerfile.lark into a lexer and LALR tables (with Lark, on first use),
caching them on disk (``$XDG_CACHE_HOME/pybuild`` or ``~/.cache/pybuild``, else a per-user
temp folder, else memory only), and a small table-driven parser that builds the tree the way
Lark's tree builder does (rules and terminals whose names start with ``_`` are inlined). Later
processes load the cached tables with ``marshal`` and never import Lark, which costs more
than parsing a 2,000-instruction Dockerfile.
"""
from __future__ import annotations

import hashlib
import marshal
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .resources import grammar_path

__all__ = ["Tables", "Tok", "Tree", "UnexpectedToken", "load_tables", "parse_tokens", "tokenize"]

_FORMAT = "pybuild-lalr-1"  # bump when the cached layout changes
Tok = tuple[str, str, int]  # (terminal, text, 1-based line)


@dataclass(frozen=True, slots=True)
class Tree:
    """A node of the parse tree: a rule's name and its children."""

    data: str
    children: list[Any]  # Tree | Tok


class UnexpectedToken(Exception):
    def __init__(self, token: Tok, expected: set[str]) -> None:
        super().__init__(f"unexpected {token[0]} on line {token[2]}, expected one of {sorted(expected)}")
        self.token = token
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Tables:
    """The parser's tables: the lexer, the LALR states and the rules."""

    lexer: re.Pattern[str]
    # state -> terminal or rule name -> (shift?, next state | rule index)
    states: dict[int, dict[str, tuple[bool, int]]]
    rules: list[tuple[str, int]]  # (origin, number of symbols)
    start: int
    end: int


def _build(grammar: str, always_accept: tuple[str, ...]) -> dict[str, Any]:
    """Compile the grammar with Lark and keep only plain data (marshal-able)."""
    from lark import Lark
    from lark.parsers.lalr_analysis import Shift

    class _Keep:  # a postlex whose only role is to keep these terminals in the lexer
        def __init__(self) -> None:
            self.always_accept = always_accept

        def process(self, stream: Iterator[Any]) -> Iterator[Any]:
            return stream

    lk = Lark(grammar, parser="lalr", lexer="basic", postlex=_Keep())
    terminals = sorted(lk.terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                                    -len(t.pattern.value), t.name))
    table = lk.parser.parser.parser.parse_table
    rules: list[Any] = []
    index: dict[Any, int] = {}
    states: dict[int, dict[str, tuple[bool, int]]] = {}
    for state, actions in table.states.items():
        row = {}
        for symbol, (action, arg) in actions.items():
            if action is Shift:
                row[str(symbol)] = (True, arg)
            else:
                if arg not in index:
                    index[arg] = len(rules)
                    rules.append((str(arg.origin.name), len(arg.expansion)))
                row[str(symbol)] = (False, index[arg])
        states[state] = row
    return {
        "terminals": [(str(t.name), str(t.pattern.to_regexp())) for t in terminals],
        "states": states,
        "rules": rules,
        "start": table.start_states["start"],
        "end": table.end_states["start"],
    }


def _cache_dirs() -> Iterator[Path]:
    """Where the tables may live, best first (lazily: the fallback costs an import)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    yield Path(base) / "pybuild"
    import tempfile

    yield Path(tempfile.gettempdir()) / f"pybuild-{os.getuid()}"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _write_cache(data: dict[str, Any], name: str) -> None:
    import tempfile

    blob = marshal.dumps(data)
    for folder in _cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, aside = tempfile.mkstemp(dir=folder, prefix=".tables-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(aside, folder / name)  # readers never see half a file
            return
        except OSError:
            continue


def load_tables(always_accept: tuple[str, ...]) -> Tables:
    grammar = grammar_path().read_text(encoding="utf-8")
    tag = hashlib.sha256((_FORMAT + "\0" + ",".join(always_accept) + "\0" + grammar).encode())
    name = f"dockerfile-{tag.hexdigest()[:20]}.tables"
    data = None
    for folder in _cache_dirs():
        data = _read_cache(folder / name)
        if data is not None:
            break
    if data is None:
        data = _build(grammar, always_accept)
        data["format"] = _FORMAT
        _write_cache(data, name)
    lexer = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in data["terminals"]))
    return Tables(lexer, data["states"], [tuple(r) for r in data["rules"]], data["start"],
                  data["end"])


def tokenize(tables: Tables, text: str) -> Iterator[Tok]:
    """The grammar's terminals, in Lark's basic-lexer order (priority first)."""
    # Every terminal is one whole line and LINE matches any line, so the matches tile the text
    # and finditer (a C loop) finds exactly what matching at each next position would.
    line = 1
    for m in tables.lexer.finditer(text):
        value = m.group()
        yield (m.lastgroup or "", value, line)
        if value.endswith("\n"):
            line += 1


def parse_tokens(tables: Tables, tokens: Iterable[Tok]) -> Tree:
    """Run the LALR automaton; build the tree with ``_``-named rules inlined, like Lark."""
    states, rules, end = tables.states, tables.rules, tables.end
    state_stack = [tables.start]
    value_stack: list[Any] = []
    last_line = 1
    stream = iter(tokens)
    while True:
        token = next(stream, None)
        if token is None:
            token = ("$END", "", last_line)
        kind = token[0]
        last_line = token[2] or last_line
        while True:  # reduce as long as the table says so, then shift the token
            row = states[state_stack[-1]]
            try:
                shift, arg = row[kind]
            except KeyError:
                raise UnexpectedToken(token, {s for s in row if s.isupper()}) from None
            if shift:
                state_stack.append(arg)
                value_stack.append(token)
                break
            origin, size = rules[arg]
            children: list[Any] = []
            if size:
                popped = value_stack[-size:]
                if isinstance(popped[0], list):
                    # left recursion of a repetition: grow its list in place (linear time)
                    children = popped[0]
                    popped = popped[1:]
                for value in popped:
                    if isinstance(value, list):
                        children.extend(value)  # an inlined rule
                    else:
                        children.append(value)
                del state_stack[-size:]
                del value_stack[-size:]
            state_stack.append(states[state_stack[-1]][origin][1])
            value_stack.append(children if origin.startswith("_") else Tree(origin, children))
            if kind == "$END" and state_stack[-1] == end:
                result = value_stack[-1]
                assert isinstance(result, Tree)
                return result
