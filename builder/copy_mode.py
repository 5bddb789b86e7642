"""``COPY --chmod``: octal modes and symbolic ones (``u+x``, ``go-w``, ``a=rX``), as BuildKit.

Octal values must be within 0..07777 (BuildKit's message otherwise). Symbolic modes follow
BSD ``setmode`` with a zero umask (an empty "who" means all): clauses separated by commas,
each ``[ugoa]*`` then one or more ``[+-=]`` actions with ``[rwxXst]*`` or a copy from
``u``, ``g`` or ``o``. ``X`` adds execute for directories and for files that already have
an execute bit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import ContextError

__all__ = ["Chmod", "parse_chmod"]

_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}
# compiled where used (re keeps them): only --chmod with letters needs them
_CLAUSE = r"^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$"
_ACTION = r"([-+=])([ugo]|[rwxXst]*)"


@dataclass(frozen=True, slots=True)
class Chmod:
    """A parsed --chmod: ``octal`` for a numeric mode, else the symbolic ``text``."""

    octal: int | None = None
    text: str = ""

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """The new permission bits (with setuid/setgid/sticky) for an entry of ``mode``."""
        if self.octal is not None:
            return self.octal
        cur = mode & 0o7777
        for clause in self.text.split(","):
            m = re.match(_CLAUSE, clause)
            assert m is not None  # validated by parse_chmod
            who_mask = 0
            for ch in m.group(1) or "a":
                who_mask |= _WHO[ch]
            for op, perms in re.findall(_ACTION, m.group(2)):
                bits = _bits(perms, cur, mode, is_dir) & who_mask
                if perms in ("u", "g", "o"):
                    bits = _copy_bits(perms, cur) & who_mask & 0o777
                if op == "+":
                    cur |= bits
                elif op == "-":
                    cur &= ~bits
                else:
                    clear = who_mask & 0o777
                    for ch in m.group(1) or "a":
                        clear |= {"u": 0o4000, "g": 0o2000, "o": 0, "a": 0o6000}[ch]
                    cur = (cur & ~clear) | bits
        return cur


def _bits(perms: str, cur: int, orig: int, is_dir: bool) -> int:
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x":
            bits |= 0o111
        elif p == "X":
            if is_dir or orig & 0o111 or cur & 0o111:
                bits |= 0o111
        elif p == "s":
            bits |= 0o6000
        elif p == "t":
            bits |= 0o1000
    return bits


def _copy_bits(who: str, cur: int) -> int:
    shift = {"u": 6, "g": 3, "o": 0}[who]
    v = (cur >> shift) & 0o7
    return v << 6 | v << 3 | v


def parse_chmod(value: int | str) -> Chmod:
    """Validate a --chmod value; raise ContextError with BuildKit's message when bad."""
    if isinstance(value, int):
        if not 0 <= value <= 0o7777:
            raise ContextError(f"invalid chmod parameter: '{value:o}'. it should be octal string and between 0 and 07777")
        return Chmod(octal=value)
    text = value.strip()
    bad = ContextError(f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777")
    if text and text[0].isdigit():
        try:
            n = int(text, 8)
        except ValueError:
            raise bad from None
        if n > 0o7777:
            raise bad
        return Chmod(octal=n)
    if not text or not all(re.match(_CLAUSE, c) for c in text.split(",")):
        raise bad
    return Chmod(text=text)
