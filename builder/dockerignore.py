"""Docker's .dockerignore semantics: reading the file and matching context paths.

This module owns which paths of a build context a list of ignore patterns excludes, the
way docker does it: the file is read as docker's ``ignorefile.ReadAll`` reads it (``#``
comment lines, blank lines, trimmed whitespace, ``filepath.Clean``, a leading ``/``
dropped, ``!`` exceptions), patterns are matched as ``moby/patternmatcher`` matches them
(``*`` ``?`` ``[...]`` ``\\`` escapes, ``**`` across directories, a pattern that matches a
directory matching everything below it, the last matching pattern winning), and a path's
result is computed from its parents' as BuildKit's context walk (``fsutil``) computes it.
``COPY --exclude`` patterns use the same engine without the file-reading rules.

Paths are relative to the context root and ``/``-separated. Matching is pure: no I/O.

Known differences, all about patterns no one writes: inside ``[...]`` every character is
literal (docker feeds ``*``, ``?`` and ``[:alpha:]`` there to a regex, with odd results);
outside classes the escapes ``\\p \\x \\Q`` and octal ones are rejected rather than read
as regex escapes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from builder.errors import ContextError

__all__ = ["IgnoreMatcher", "IgnoreRule", "go_clean"]

# Go's unicode.IsSpace, which strings.TrimSpace uses.
_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
         "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# Characters patternmatcher escapes for the regex; they are literal in a pattern.
_REGEX_LITERALS = frozenset(".+()|{}$")
# What fsutil counts as glob syntax when deciding whether a directory can be pruned.
_GLOB_CHARS = frozenset("*[]?^\\")
# Escapes Go's regexp gives a meaning to after patternmatcher passes "\\x" through.
_REGEX_ESCAPES = {
    "d": "[0-9]", "D": "[^0-9]", "s": "[\\t\\n\\f\\r ]", "S": "[^\\t\\n\\f\\r ]",
    "w": "[0-9A-Za-z_]", "W": "[^0-9A-Za-z_]", "a": "\\a", "f": "\\f", "t": "\\t",
    "n": "\\n", "r": "\\r", "v": "\\v", "b": "(?a:\\b)", "B": "(?a:\\B)", "A": "\\A", "z": "\\Z",
}
_BAD_PATTERN = "syntax error in pattern"
# bufio.Scanner's MaxScanTokenSize: ignorefile.ReadAll fails on a longer line.
_MAX_LINE = 64 * 1024


class _Kind(Enum):
    EXACT = 1
    PREFIX = 2
    SUFFIX = 3
    REGEX = 4


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a ``/``-separated path."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """One pattern: ``text`` as written (trimmed), ``line`` in .dockerignore (None for
    patterns given on a command line or in ``COPY --exclude``)."""

    text: str
    line: int | None
    pattern: str  # cleaned, without the leading "!"
    exclusion: bool

    def describe(self) -> str:
        """How an error message names this rule."""
        if self.line is None:
            return f'excluded by pattern "{self.text}"'
        return f'excluded by .dockerignore rule "{self.text}" on line {self.line}'


class _Compiled:
    """A pattern compiled the way patternmatcher compiles it, match type included: the
    exact/prefix/suffix shortcuts are semantics, not just speed (``**file`` is a plain
    suffix test, so it matches ``dir/myfile``)."""

    __slots__ = ("kind", "literal", "regex")

    def __init__(self, pattern: str) -> None:
        parts: list[str] = []
        kind = _Kind.EXACT
        i, n, step = 0, len(pattern), 0
        while i < n:
            ch = pattern[i]
            i += 1
            if ch == "*":
                if i < n and pattern[i] == "*":
                    i += 1
                    if i < n and pattern[i] == "/":
                        i += 1  # "**/" is read as "**"
                    if i >= n:
                        if kind is _Kind.EXACT:
                            kind = _Kind.PREFIX
                        else:
                            parts.append(".*")
                            kind = _Kind.REGEX
                    else:
                        parts.append("(?:.*/)?")
                        kind = _Kind.REGEX
                    if step == 0:
                        kind = _Kind.SUFFIX
                else:
                    parts.append("[^/]*")
                    kind = _Kind.REGEX
            elif ch == "?":
                parts.append("[^/]")
                kind = _Kind.REGEX
            elif ch in _REGEX_LITERALS:
                parts.append("\\" + ch)
            elif ch == "\\":
                if i >= n:  # filepath.Match has already rejected this
                    raise ValueError(_BAD_PATTERN)
                parts.append(_escape(pattern[i]))
                i += 1
                kind = _Kind.REGEX
            elif ch == "[":
                cls, i = _char_class(pattern, i)
                parts.append(cls)
                kind = _Kind.REGEX
            elif ch == "]":
                parts.append("\\]")
                kind = _Kind.REGEX
            elif ch == "^":
                parts.append("^")  # passed to the regex unescaped: an anchor
            else:
                parts.append(re.escape(ch))
            step += 1
        self.kind = kind
        if kind is _Kind.PREFIX:
            self.literal = pattern[:-2]
        elif kind is _Kind.SUFFIX:
            self.literal = pattern[2:]
        else:
            self.literal = pattern
        self.regex = re.compile("".join(parts)) if kind is _Kind.REGEX else None

    def matches(self, path: str) -> bool:
        if self.kind is _Kind.EXACT:
            return path == self.literal
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.literal)
        if self.kind is _Kind.SUFFIX:
            suffix = self.literal
            # "**/foo" also matches "foo" itself
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


def _escape(ch: str) -> str:
    """``\\ch`` outside a class: punctuation is literal; letters mean what Go's regexp says."""
    if ch < "\x80" and not ch.isalnum():
        return re.escape(ch)
    if ch in _REGEX_ESCAPES:
        return _REGEX_ESCAPES[ch]
    raise ValueError(f"unsupported escape '\\{ch}' in pattern")


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    # filepath.Match's getEsc: one (possibly escaped) character of a [...] class.
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError(_BAD_PATTERN)
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError(_BAD_PATTERN)
    if i + 1 >= len(pattern):
        raise ValueError(_BAD_PATTERN)
    return pattern[i], i + 1


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; returns the regex and the end."""
    out = ["["]
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    nrange = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and nrange > 0:
            return "".join(out) + "]", i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        if lo > hi:  # Go's regexp refuses the class, so docker fails on it
            raise ValueError(f"invalid character class range {lo}-{hi}")
        out.append(_class_escape(lo) if lo == hi else f"{_class_escape(lo)}-{_class_escape(hi)}")
        nrange += 1


def _class_escape(ch: str) -> str:
    return "\\" + ch if ch in "\\]-[^" else ch


def _validate(pattern: str) -> None:
    """filepath.Match's syntax check, which patternmatcher runs on every pattern."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            if i + 1 >= n:
                raise ValueError(_BAD_PATTERN)
            i += 2
        elif pattern[i] == "[":
            _, i = _char_class(pattern, i + 1)
        else:
            i += 1


class IgnoreMatcher:
    """An ordered list of ignore rules. Immutable once built; safe to share."""

    __slots__ = ("_cache", "_compiled", "_exception_dirs", "_prefix_only_exceptions", "rules")

    def __init__(self, rules: tuple[IgnoreRule, ...]) -> None:
        self.rules = rules
        compiled = []
        for rule in rules:
            try:
                _validate(rule.pattern)
                compiled.append(_Compiled(rule.pattern))
            except ValueError as err:
                where = f".dockerignore line {rule.line}: " if rule.line is not None else ""
                raise ContextError(f'{where}bad pattern "{rule.text}": {err}') from None
        self._compiled = tuple(compiled)
        exceptions = [_without_trailing_glob(r.pattern) for r in rules if r.exclusion]
        # Like BuildKit's walk: an excluded directory is pruned only when every exception
        # is a plain path and none of them lies below it.
        self._prefix_only_exceptions = not any(_GLOB_CHARS & set(p) for p in exceptions)
        self._exception_dirs = tuple(p + "/" for p in exceptions)
        self._cache: dict[str, tuple[bool, ...]] = {}

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, name: str = ".dockerignore") -> IgnoreMatcher:
        """Read an ignore file's bytes as docker does: any bytes (Go strings are bytes; a
        name that is not UTF-8 matches the same bytes on disk), lines of at most
        bufio.Scanner's 64 KiB."""
        for lineno, line in enumerate(data.split(b"\n"), 1):
            if len(line) >= _MAX_LINE:
                raise ContextError(
                    f"{name} line {lineno} is {len(line)} bytes long: docker reads lines of at "
                    f"most {_MAX_LINE - 1} bytes (bufio.Scanner: token too long)")
        matcher = cls.from_text(data.decode("utf-8", "surrogateescape"))
        _check_sendable(matcher.rules, name)
        return matcher

    @classmethod
    def from_text(cls, text: str) -> IgnoreMatcher:
        """Read a .dockerignore file's text as docker does."""
        rules = []
        for lineno, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            line = raw.removesuffix("\r")
            if line.startswith("#"):
                continue
            written = line.strip(_SPACE)
            if not written:
                continue
            pattern = written
            invert = pattern.startswith("!")
            if invert:
                pattern = pattern[1:].strip(_SPACE)
            if pattern:
                pattern = go_clean(pattern)
                if len(pattern) > 1 and pattern.startswith("/"):
                    pattern = pattern[1:]
            rules.append(_rule(("!" if invert else "") + pattern, lineno, written))
        return cls(tuple(rules))

    @classmethod
    def from_patterns(cls, patterns: list[str] | tuple[str, ...]) -> IgnoreMatcher:
        """Patterns given directly (``COPY --exclude``): no comment or leading-slash rules."""
        return cls(tuple(_rule(p.strip(_SPACE), None, p.strip(_SPACE))
                         for p in patterns if p.strip(_SPACE)))

    # -- queries -------------------------------------------------------------------
    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """Whether the path is left out of the context. ``is_dir`` does not change the
        answer (docker cleans ``dir/`` to ``dir``, which matches files too) but says what
        the caller has in hand."""
        return self.matching_rule(relpath, is_dir) is not None

    def rule_for(self, relpath: str, is_dir: bool = False) -> str | None:
        """The text of the rule that excludes the path, or None if it is not excluded."""
        rule = self.matching_rule(relpath, is_dir)
        return rule.text if rule is not None else None

    def matching_rule(self, relpath: str, is_dir: bool = False) -> IgnoreRule | None:
        """The rule that excludes the path (its text and line), or None."""
        path = _normalize(relpath)
        if path == "." or not self.rules:
            return None
        parent = path.rpartition("/")[0]
        _, index = self._evaluate_info(path, self._info(parent) if parent else None)
        return self.rules[index] if index is not None else None

    def can_skip_dir(self, relpath: str) -> bool:
        """True when the directory is excluded and no exception could bring back anything
        below it, so a context walk need not descend into it."""
        if not self._prefix_only_exceptions or not self.excluded(relpath, True):
            return False
        prefix = _normalize(relpath) + "/"
        return not any(d.startswith(prefix) for d in self._exception_dirs)

    @property
    def has_exceptions(self) -> bool:
        return any(r.exclusion for r in self.rules)

    def __repr__(self) -> str:
        return f"IgnoreMatcher({[r.text for r in self.rules]!r})"

    # -- the walk ------------------------------------------------------------------
    def _info(self, path: str) -> tuple[bool, ...]:
        """Per-rule match flags of a directory, computed from its parents' as BuildKit's
        context walk does (patternmatcher's MatchesUsingParentResults)."""
        # Walk up to the nearest cached ancestor, then compute downwards (no recursion,
        # so any depth works).
        todo = []
        probe = path
        while probe and probe not in self._cache:
            todo.append(probe)
            probe = probe.rpartition("/")[0]
        info = self._cache[probe] if probe else None
        if len(self._cache) + len(todo) > 50_000:  # bound memory on huge contexts
            self._cache.clear()
        for p in reversed(todo):
            info, _ = self._evaluate_info(p, info)
            self._cache[p] = info
        assert info is not None
        return info

    def _evaluate_info(
        self, path: str, parent: tuple[bool, ...] | None
    ) -> tuple[tuple[bool, ...], int | None]:
        matched = False
        index: int | None = None
        flags = []
        for i, (rule, compiled) in enumerate(zip(self.rules, self._compiled)):
            hit = parent[i] if parent is not None else False
            if not hit:
                # An include rule cannot change an excluded path, nor an exception an
                # included one: skip it (and remember it as not matching, as docker does).
                if rule.exclusion != matched:
                    flags.append(False)
                    continue
                hit = compiled.matches(path)
            flags.append(hit)
            if hit:
                matched = not rule.exclusion
                index = i if matched else None
        return tuple(flags), index


def _check_sendable(rules: tuple[IgnoreRule, ...], name: str) -> None:
    """BuildKit sends the patterns to the context's sender as gRPC metadata, which must
    be printable ASCII: it escapes them all when one holds a byte past ASCII, and else
    fails the build on a control character left inside a pattern (a tab before a
    would-be trailing comment, a lone CR)."""
    if any(ch > "\x7f" for rule in rules for ch in rule.pattern):
        return
    for rule in rules:
        bad = next((ch for ch in rule.pattern if ch < " " or ch == "\x7f"), None)
        if bad is not None:
            raise ContextError(
                f"{name} line {rule.line}: the pattern {rule.text!r} holds the control character "
                f"{bad!r}, which BuildKit cannot send with the context (header key "
                f'"exclude-patterns" contains value with non-printable ASCII characters)')


def _rule(pattern: str, line: int | None, written: str) -> IgnoreRule:
    """patternmatcher.New's handling of one pattern."""
    pattern = go_clean(pattern.strip(_SPACE))
    exclusion = pattern.startswith("!")
    if exclusion:
        if len(pattern) == 1:
            where = f".dockerignore line {line}: " if line is not None else ""
            raise ContextError(f'{where}illegal exclusion pattern: "!"')
        pattern = pattern[1:]
    return IgnoreRule(text=written, line=line, pattern=pattern, exclusion=exclusion)


def _without_trailing_glob(pattern: str) -> str:
    return pattern.removesuffix("/**").removesuffix("/*")


def _normalize(relpath: str) -> str:
    path = go_clean(relpath)
    while path.startswith("/"):
        path = path[1:] or "."
    return path
