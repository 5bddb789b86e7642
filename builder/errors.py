"""Every error a user can cause, and how it prints itself.

The tree::

    BuildError (exit 1)            root; knows its exit status and where it came from
    ├── UsageError (exit 2)        a bad flag or argument combination
    ├── ParseError                 the Dockerfile text is malformed (names the line)
    ├── ExpandError                a variable expansion failed (names the line)
    ├── GraphError                 stages/targets/ARGs do not fit together
    ├── CheckError                 a build check found something under `check=error=true`
    ├── ContextError               the build context: missing source, escaping path
    ├── ExecError                  a RUN step failed or could not be started
    ├── LayerError                 a layer could not be made or unpacked safely
    ├── CacheError                 the layer store is broken or locked
    └── RegistryError              talking to a registry failed (names it and the status)

Only ``builder.cli`` turns a BuildError into an exit status; everything else raises.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SourceRange",
    "BuildError",
    "UsageError",
    "ParseError",
    "ExpandError",
    "GraphError",
    "CheckError",
    "ContextError",
    "ExecError",
    "LayerError",
    "CacheError",
    "RegistryError",
]


@dataclass(frozen=True, slots=True)
class SourceRange:
    """Where an instruction (or the thing at fault) stands in its Dockerfile.

    Lines are 1-based and inclusive; ``column`` is 0-based within ``start``'s line.
    """

    start: int
    end: int
    column: int = 0
    filename: str = "Dockerfile"

    def __str__(self) -> str:
        return f"{self.filename}:{self.start}"


class BuildError(Exception):
    """Root of pybuild's errors. ``str(err)`` is the one-line message with its location."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        location: SourceRange | None = None,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.source_line = source_line
        self.hint = hint

    def __str__(self) -> str:
        if self.location is not None:
            return f"{self.location}: {self.message}"
        return self.message

    def render(self) -> str:
        """The full text shown to a user: message, the offending line with a caret, a hint."""
        lines = [str(self)]
        if self.location is not None and self.source_line is not None:
            text = self.source_line.rstrip("\r\n")
            if len(text) > 200:
                # Show a window around the column so a 50 MB line does not flood the terminal.
                lo = max(0, self.location.column - 80)
                text = ("..." if lo else "") + text[lo : lo + 160] + "..."
                col = self.location.column - lo + (3 if lo else 0)
            else:
                col = self.location.column
            prefix = f" {self.location.start} | "
            lines.append(prefix + text)
            lines.append(" " * (len(prefix) + max(col, 0)) + "^")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class UsageError(BuildError):
    exit_code = 2


class ParseError(BuildError):
    pass


class ExpandError(BuildError):
    pass


class GraphError(BuildError):
    pass


class CheckError(BuildError):
    pass


class ContextError(BuildError):
    pass


class ExecError(BuildError):
    pass


class LayerError(BuildError):
    pass


class CacheError(BuildError):
    pass


class RegistryError(BuildError):
    pass
