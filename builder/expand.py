"""Shell-word expansion as Dockerfiles use it (the semantics of BuildKit's shell lexer).

This module owns turning one Dockerfile word into its expanded text: ``$v`` and ``${v}``,
the modifiers ``${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?w} ${v?w}``, the pattern operators
``${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}``, quote removal, the escape token
(``\\`` or a backtick, set per Dockerfile) and, for instructions that split, splitting the
result into words the shell way. It does no I/O and knows nothing of instructions: callers
pass the environment and attach the Dockerfile location to any :class:`ExpandError`.

Public API:

* :func:`expand_word` -- one string, no field splitting (BuildKit's ``ProcessWord``).
* :func:`expand_words` -- split into words (BuildKit's ``ProcessWords``; used by EXPOSE).
* :func:`expand_shown` -- a step's text as BuildKit shows it in progress (quotes kept and
  unset variables left alone for a RUN).
* :func:`expand_heredoc` -- the body of a ``COPY <<EOF`` heredoc whose delimiter was not
  quoted: variables and ``\\`` escapes are processed but quotes are kept as they are.

Deliberate difference: since v0.15 BuildKit shares one word buffer between nested
``${v:-...}`` expansions, so in word-splitting mode a prefix such as ``x`` in
``x${v:-y}`` is lost. That is an accident of an optimisation, not a semantic; here the
word stays ``xy`` as in every earlier BuildKit release and in a shell.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from builder.errors import ExpandError

__all__ = ["expand_heredoc", "expand_shown", "expand_word", "expand_words"]

# Go's unicode.IsSpace: the Unicode White_Space property (str.isspace also accepts
# \x1c-\x1f, which Go does not).
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Characters that may follow ``<<`` before a heredoc word (BuildKit's isWhitespace).
_HEREDOC_BLANK = frozenset("\t\r ")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
# Go prints an EOF rune (-1) through string(rune) as the replacement character.
_EOF_TEXT = "\ufffd"


class _LexError(Exception):
    """Raised inside the lexer; turned into ExpandError naming the whole word."""


class _Words:
    """Accumulates the split words: unquoted expansion results split on blanks, quoted text not."""

    __slots__ = ("buf", "in_word", "size", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf: list[str] = []
        self.size = 0  # characters in buf: an empty quoted string adds a part but no text
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE:
            # A blank only ends a word that has text: an empty quoted string ("") opens
            # a word but does not survive on its own (BuildKit behaves this way).
            if self.in_word and self.size:
                self._push()
        else:
            self.add_raw(ch)

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw(self, text: str) -> None:
        self.buf.append(text)
        self.size += len(text)
        self.in_word = True

    def _push(self) -> None:
        self.words.append("".join(self.buf))
        self.buf = []
        self.size = 0
        self.in_word = False

    def finish(self) -> list[str]:
        if self.size:
            self._push()
        return self.words


class _Lexer:
    """One pass over one word. ``raw_escapes`` is dynamic state: pattern operands keep
    their escape characters so the glob converter can see ``\\*``."""

    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        used: set[str] | None,
        *,
        skip_quotes: bool = False,
        raw_quotes: bool = False,
        skip_unset: bool = False,
    ) -> None:
        self.text = text
        # Go's text/scanner silently drops a byte-order mark at the very start.
        self.pos = 1 if text.startswith("\ufeff") else 0
        self.env = env
        self.escape = escape
        self.used = used
        self.skip_quotes = skip_quotes
        self.raw_quotes = raw_quotes  # quotes kept in the result (a step's shown name)
        self.skip_unset = skip_unset  # an unset variable stays as written (the same)
        self.raw_escapes = False

    # -- the scanner ---------------------------------------------------------------
    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def next(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def getenv(self, name: str) -> tuple[str, bool]:
        if self.used is not None:
            self.used.add(name)
        if name in self.env:
            return self.env[name], True
        return "", False

    # -- the grammar ---------------------------------------------------------------
    def stop_on(self, stop: str | None, raw_escapes: bool, words: _Words | None = None) -> str:
        """Read up to ``stop`` (consumed) or, when ``stop`` is None, to the end."""
        result: list[str] = []
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            while (ch := self.peek()) is not None:
                if stop is not None and ch == stop:
                    self.next()
                    return "".join(result)
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    if words is not None:
                        words.add_string(tmp)
                    continue
                if ch == "<" or (ch in "'\"" and not self.skip_quotes):
                    if ch == "<":
                        tmp = self.maybe_heredoc()
                    elif ch == "'":
                        tmp = self.single_quote()
                    else:
                        tmp = self.double_quote()
                    result.append(tmp)
                    if words is not None:
                        words.add_raw(tmp)
                    continue
                self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        result.append(ch)
                        if words is not None:
                            words.add_raw(ch)
                    ch = self.next()
                    if ch is None:  # a trailing escape is dropped
                        break
                    if words is not None:
                        words.add_raw(ch)
                elif words is not None:
                    words.add_char(ch)
                result.append(ch)
            if stop is not None:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result)
        finally:
            self.raw_escapes = saved

    def single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise _LexError("unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos : end]
        self.pos = end + 1
        return f"'{body}'" if self.raw_quotes else body

    def double_quote(self) -> str:
        # Literal except $ expansions; the escape token escapes only " $ and itself.
        result: list[str] = []
        self.next()
        while True:
            ch = self.peek()
            if ch is None:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                text = "".join(result)
                return f'"{text}"' if self.raw_quotes else text
            if ch == "$":
                result.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                nxt = self.peek()
                if nxt is None:
                    continue  # the loop then reports the missing quote
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
                    assert ch is not None
            result.append(ch)

    def maybe_heredoc(self) -> str:
        # ``<<`` and the blanks after it stay glued to the heredoc word when splitting.
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        start = self.pos
        while (ch := self.peek()) is not None and ch in _HEREDOC_BLANK:
            self.next()
        return "<<" + self.text[start : self.pos]

    def name(self) -> str:
        """A variable name: letters, digits, _; or all digits; or one special parameter."""
        ch = self.peek()
        if ch is None:
            return ""
        start = self.pos
        if ch.isdecimal():
            while (ch := self.peek()) is not None and ch.isdecimal():
                self.next()
            return self.text[start : self.pos]
        if ch in _SPECIAL_PARAMS:
            self.next()
            return ch
        while (ch := self.peek()) is not None and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.next()
        return self.text[start : self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.getenv(name)
            return "$" + name if self.skip_unset and not found else value
        self.next()
        first = self.peek()
        if first is None:
            raise _LexError("syntax error: missing '}'")
        if first in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch is None:
            # BuildKit says "unsupported modifier (\ufffd)" here; the brace is what is missing.
            raise _LexError("syntax error: missing '}'")
        modifier = ch
        if ch == "}":
            value, found = self.getenv(name)
            return f"${{{name}}}" if self.skip_unset and not found else value
        if ch == "/":
            return self.substitute(name)
        if ch not in ":+-?#%":
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self.next()
            modifier += ch if ch is not None else _EOF_TEXT
        is_pattern = ch in ("#", "%")
        if null_is_unset and is_pattern:
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        word = self.operand("}", is_pattern, "syntax error: missing '}'")
        value, is_set = self.getenv(name)
        if self.skip_unset and not is_set:
            return f"${{{name}{modifier}{word}}}"  # the operand as processed, as BuildKit
        empty = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not is_set:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            # One operator character: shortest match; doubled: longest.
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _LexError(f"unsupported modifier ({modifier}) in substitution")

    def operand(self, stop: str, raw_escapes: bool, eof_message: str) -> str:
        try:
            return self.stop_on(stop, raw_escapes)
        except _LexError:
            if self.peek() is None:
                raise _LexError(eof_message) from None
            raise

    def substitute(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.operand("/", True, "syntax error: missing '/' in ${}")
        replacement = self.operand("}", True, "syntax error: missing '}'")
        value, found = self.getenv(name)
        if self.skip_unset and not found:
            return f"${{{name}/{pattern}/{replacement}}}"  # one slash, as BuildKit writes it
        rx = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return _replace_all(rx, value, replacement)
        m = rx.search(value)
        if m is None:
            return value
        return value[: m.start()] + replacement + value[m.end() :]


# -- patterns -------------------------------------------------------------------------
def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell pattern (``*``, ``?``, ``\\`` escapes) as a regex. Like BuildKit, brackets
    are literal characters, not classes, and the pattern escape is always ``\\``."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i, n = 0, len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            nxt = pattern[i] if i < n else None
            if nxt in ("}", "/"):
                continue  # the escape protected ${}'s own delimiters; drop it
            if nxt not in ("*", "?", "\\"):
                raise _LexError(
                    f"invalid pattern ({pattern}) in substitution: "
                    f"invalid escape '\\{nxt if nxt is not None else _EOF_TEXT}'"
                )
            out.append(re.escape(nxt))
            i += 1
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        j = last - i
        if tok == "\\" and i != last:
            out[j - 1], out[j] = tok, pattern[i + 1]
            i += 2
        else:
            out[j] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds the leftmost match only, so the shortest *suffix* is found by
    # matching the reversed pattern against the reversed value.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _replace_all(rx: re.Pattern[str], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: an empty match right after a match is not replaced
    (Python's re.sub does replace it), and the replacement is a Go template."""
    out: list[str] = []
    last = pos = 0
    while pos <= len(value):
        m = rx.search(value, pos)
        if m is None:
            break
        start, end = m.span()
        out.append(value[last:start])
        if end > last or start == 0:
            out.append(_expand_template(template, m.group()))
        last = end
        pos = max(end, pos + 1)
    out.append(value[last:])
    return "".join(out)


def _expand_template(template: str, match: str) -> str:
    """Go's regexp template: ``$$`` is ``$``, ``$0``/``${0}`` the match, any other
    ``$name``/``${name}`` empty (the pattern has no groups), a malformed ``$`` literal."""
    if "$" not in template:
        return template
    out: list[str] = []
    i, n = 0, len(template)
    while (j := template.find("$", i)) >= 0:
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        k = i + 1 if i < n and template[i] == "{" else i
        brace = k > i
        start = k
        while k < n and (template[k].isalpha() or template[k].isdecimal() or template[k] == "_"):
            k += 1
        name = template[start:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")
            continue
        i = k + 1 if brace else k
        if name == "0":
            out.append(match)
    out.append(template[i:])
    return "".join(out)


# -- the public functions -------------------------------------------------------------
def _run(lexer: _Lexer, words: _Words | None) -> str:
    try:
        return lexer.stop_on(None, False, words)
    except _LexError as err:
        from builder.parse_go import go_quote  # %q, as BuildKit's message has it

        raise ExpandError(f"failed to process {go_quote(lexer.text)}: {err}") from None


def _check_escape(escape: str) -> None:
    if escape not in ("\\", "`"):
        raise ValueError(f"escape token must be '\\' or '`', not {escape!r}")


def _plain(word: str, escape: str) -> bool:
    """True when expansion cannot change ``word`` (the common case, kept fast)."""
    return not any(c in word for c in ("$", "'", '"', escape)) and not word.startswith("\ufeff")


def expand_word(
    word: str, env: Mapping[str, str], *, escape: str = "\\", used: set[str] | None = None
) -> str:
    """Expand one word without field splitting. Names looked up are added to ``used``."""
    _check_escape(escape)
    if _plain(word, escape):
        return word
    return _run(_Lexer(word, env, escape, used), None)


def expand_shown(text: str, env: Mapping[str, str], *, escape: str = "\\", raw: bool = False) -> str:
    """A step's text as BuildKit shows it in the step's name (processCmdEnv): the whole text
    expanded as one word; with ``raw`` (a RUN) its quotes kept and unset variables left as
    written. Text that does not expand is shown as written."""
    _check_escape(escape)
    if _plain(text, escape):
        return text
    try:
        return _run(_Lexer(text, env, escape, None, raw_quotes=raw, skip_unset=raw), None)
    except ExpandError:
        return text


def expand_words(
    word: str, env: Mapping[str, str], *, escape: str = "\\", used: set[str] | None = None
) -> list[str]:
    """Expand and split: unquoted expansion results split on blanks, quoted text does not."""
    _check_escape(escape)
    words = _Words()
    _run(_Lexer(word, env, escape, used), words)
    return words.finish()


def expand_heredoc(text: str, env: Mapping[str, str], *, used: set[str] | None = None) -> str:
    """Expand a heredoc body: ``$`` forms and ``\\`` escapes, quotes left as written.
    BuildKit always uses ``\\`` here, whatever the Dockerfile's escape directive says."""
    if _plain(text, "\\"):
        return text
    return _run(_Lexer(text, env, "\\", used, skip_quotes=True), None)
