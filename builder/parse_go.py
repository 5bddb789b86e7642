"""Small pieces of Go semantics the reference parser relies on, so pybuild gives the same answers.

Owns: Go's idea of whitespace (unicode.IsSpace), strings.TrimSpace/ToLower, strconv.Quote,
a JSON array reader that accepts and rejects exactly what Go's encoding/json does for
`RUN ["..."]`-style arguments, and time.ParseDuration. Text is a ``str`` decoded with
``surrogateescape``: a lone surrogate U+DC80..U+DCFF stands for a byte that was not UTF-8.
"""
from __future__ import annotations

import json
import re

__all__ = [
    "GO_FALSE",
    "GO_SPACES",
    "GO_TRUE",
    "NotStringArray",
    "go_lower",
    "go_quote",
    "go_quote_list",
    "go_trim_space",
    "parse_duration",
    "parse_json_array",
    "printable",
    "ram_in_bytes",
    "to_text",
]

# unicode.IsSpace: the ASCII spaces plus U+0085, U+00A0 and category Zs/Zl/Zp.
# What strconv.ParseBool takes, exactly: BuildKit and buildx read every boolean option with it.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

GO_SPACES = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def to_text(data: str | bytes) -> str:
    """Bytes as Go sees them, held in a str: bytes that are not UTF-8 become lone surrogates."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = data.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "surrogateescape")


_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def printable(s: str) -> str:
    """Text safe to show on a terminal, one character for one (so a caret still lines up):
    control characters and bytes that were not UTF-8 become U+FFFD."""
    return _UNPRINTABLE.sub("\ufffd", s)


def go_trim_space(s: str) -> str:
    return s.strip(GO_SPACES)


def go_lower(s: str) -> str:
    """strings.ToLower: a simple per-rune mapping (no final sigma, İ -> i)."""
    if s.isascii():
        return s.lower()
    return "".join("i" if c == "\u0130" else (c.lower() if len(c.lower()) == 1 else c) for c in s)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_PLAIN = re.compile(r'[ -!#-\[\]-~]*\Z')  # printable ASCII without " and \


def _printable(ch: str) -> bool:
    """Go's unicode.IsPrint for a non-ASCII rune: a letter, mark, number, punctuation or
    symbol (unicodedata is loaded on the first such rune, not at every start)."""
    import unicodedata

    return unicodedata.category(ch)[0] in "LMNPS"


def go_quote(s: str) -> str:
    """strconv.Quote: what %q prints. Non-UTF-8 bytes (lone surrogates) print as \\xNN."""
    if _PLAIN.match(s):
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == " " or 0x20 < o < 0x7F or (o > 0x7F and _printable(ch)):
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")  # not valid UTF-8 either; Go would see 3 bad bytes
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def go_quote_list(items: tuple[str, ...] | list[str]) -> str:
    """fmt's %q of a []string: ["a" "b"]."""
    return "[" + " ".join(go_quote(x) for x in items) + "]"


# ---- JSON (encoding/json) ------------------------------------------------------------------

class NotStringArray(ValueError):
    """A JSON array with something other than strings in it: buildkit refuses these."""

    def __init__(self) -> None:
        super().__init__("when using JSON array syntax, arrays must be comprised of strings only")


_WS = r"[ \t\n\r]*"
_STR = r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_STRING_ARRAY = re.compile(rf"\[{_WS}(?:{_STR}(?:{_WS},{_WS}{_STR})*)?{_WS}\]{_WS}\Z")
_STRINGS = re.compile(_STR)
# Patterns most builds never use are compiled where they are used (re keeps them).
_TOKEN = (
    rf"{_WS}(?:(?P<s>{_STR})|(?P<n>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<l>true|false|null)|(?P<p>[\[\]{},:]))"
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_MAX_DEPTH = 10000  # encoding/json's nesting limit


def _decode_string(token: str) -> str:
    value: str = json.loads(token)
    # Go replaces bad UTF-8 and unpaired \uD800-style escapes with U+FFFD.
    return _SURROGATES.sub("\ufffd", value) if _SURROGATES.search(value) else value


def parse_json_array(rest: str) -> list[str] | None:
    """The strings of a JSON array, None if ``rest`` is not JSON (shell form then).

    Raises NotStringArray for valid JSON arrays holding anything but strings."""
    rest = rest.lstrip(GO_SPACES)
    if not rest.startswith("["):
        return None
    if _STRING_ARRAY.match(rest):
        return [_decode_string(m.group(0)) for m in _STRINGS.finditer(rest)]
    if _valid_json(rest):
        raise NotStringArray()
    return None


def _valid_json(text: str) -> bool:
    """Whether encoding/json would decode ``text`` into a Go value without any error.

    Iterative (no recursion limit to hit); numbers that overflow float64 are errors in Go."""
    stack: list[str] = []  # "[" or "{"
    expect = "value"  # value | value_or_close | comma_or_close | key | key_or_close | colon
    pos, n = 0, len(text)
    while True:
        m = re.compile(_TOKEN).match(text, pos)
        if m is None:
            return False
        pos = m.end()
        kind = m.lastgroup
        tok = m.group(kind) if kind else ""
        if expect in ("value", "value_or_close"):
            if kind == "p" and tok == "]" and expect == "value_or_close":
                stack.pop()
            elif kind == "p" and tok in "[{":
                stack.append(tok)
                if len(stack) > _MAX_DEPTH:
                    return False
                expect = "value_or_close" if tok == "[" else "key_or_close"
                continue
            elif kind == "p" or kind == "n" and float(tok) in (float("inf"), float("-inf")):
                return False
        elif expect in ("key", "key_or_close"):
            if kind == "p" and tok == "}" and expect == "key_or_close":
                stack.pop()
            elif kind == "s":
                expect = "colon"
                continue
            else:
                return False
        elif expect == "colon":
            if tok != ":":
                return False
            expect = "value"
            continue
        else:  # comma_or_close
            closer = "]" if stack and stack[-1] == "[" else "}"
            if tok == ",":
                expect = "value" if closer == "]" else "key"
                continue
            if tok != closer:
                return False
            stack.pop()
        # a value (or a container) just ended
        if not stack:
            return text[pos:].strip(" \t\n\r") == "" and pos <= n
        expect = "comma_or_close"


# ---- time.ParseDuration ----------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_DURATION_PART = r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)"  # compiled where used
_MAX_DURATION = (1 << 63) - 1  # nanoseconds in an int64


_RAM_SIZE = r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"  # compiled where used


def ram_in_bytes(text: str) -> int | None:
    """A size as go-units' RAMInBytes reads it (docker's --memory and --shm-size, a tmpfs
    mount's size, `docker builder prune --keep-storage`): a number, maybe with a fraction,
    and an optional binary unit k, m, g, t or p (`mb`, `MiB` too); None if it is not one."""
    m = re.match(_RAM_SIZE, text)
    if not m:
        return None
    try:
        number = float(m.group(1))
    except ValueError:  # 1.2.3: the pattern lets it through, as Go's does, to fail here
        return None
    unit = m.group(2)
    return int(number * (1 << (10 * ("kmgtp".index(unit.lower()) + 1)) if unit else 1))


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("1m30s", "1.5h", "0"); ValueError with Go's message."""
    orig, s = text, text
    neg = False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if s == "":
        raise ValueError(f"time: invalid duration {go_quote(orig)}")
    total_ns = 0.0
    while s:
        m = re.match(_DURATION_PART, s)
        assert m is not None
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise ValueError(f"time: invalid duration {go_quote(orig)}")
        if unit == "":
            raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        total_ns += float(number) * _UNITS[unit] * 1e9
        if total_ns > _MAX_DURATION:
            raise ValueError(f"time: invalid duration {go_quote(orig)}")
        s = s[m.end():]
    seconds = round(total_ns) / 1e9
    return -seconds if neg else seconds
