"""The typed Dockerfile instructions: frozen values, one class per instruction.

Owns the shapes the rest of pybuild builds from (graph, config, solve). Every instruction
knows its source range, its keyword (upper case), the logical line as written (``original``,
continuations joined) and its raw ``--flags``. Word values are NOT expanded: ``$VAR`` and
quotes stay as written, and ``builder.expand`` handles them at build time, like buildkit.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import SourceRange
from .parse_heredoc import Heredoc

__all__ = [
    "INSTRUCTION_NAMES",
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "Label",
    "Maintainer",
    "Onbuild",
    "Run",
    "Shell",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
]

INSTRUCTION_NAMES = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """What every instruction has: where it is, its keyword, text and flags."""

    range: SourceRange
    keyword: str
    original: str
    flags: tuple[str, ...] = ()

    @property
    def heading(self) -> str:
        """The instruction's first line as written (a heredoc's body left out), stripped:
        what a step is named by."""
        return self.original.split("\n", 1)[0].strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class From(Instruction):
    """FROM image [AS name]."""

    image: str
    stage_name: str | None = None  # lower-cased, as buildkit stores it
    platform: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Run(Instruction):
    """RUN, in shell or exec form."""

    command: tuple[str, ...]
    prepend_shell: bool  # True for the shell form
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[str, ...] = ()  # raw --mount values
    network: str | None = None
    security: str | None = None
    devices: tuple[str, ...] = ()  # raw --device values


@dataclass(frozen=True, slots=True, kw_only=True)
class Cmd(Instruction):
    """CMD."""

    command: tuple[str, ...]
    prepend_shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Entrypoint(Instruction):
    """ENTRYPOINT."""

    command: tuple[str, ...]
    prepend_shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Shell(Instruction):
    """SHELL."""

    shell: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Instruction):
    """COPY."""

    sources: tuple[str, ...]  # paths; heredoc sources are in ``heredocs``
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_stage: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Add(Instruction):
    """ADD."""

    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None  # None: ADD's default (unpack local archives)
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Env(Instruction):
    """ENV."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Label(Instruction):
    """LABEL."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Arg(Instruction):
    """ARG."""

    args: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Expose(Instruction):
    """EXPOSE."""

    ports: tuple[str, ...]  # sorted, as buildkit sorts them


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume(Instruction):
    """VOLUME."""

    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class User(Instruction):
    """USER."""

    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Workdir(Instruction):
    """WORKDIR."""

    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSignal(Instruction):
    """STOPSIGNAL."""

    signal: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Healthcheck(Instruction):
    """HEALTHCHECK."""

    # ("NONE",), ("CMD", arg, ...) for the exec form, ("CMD-SHELL", command) for the shell form
    test: tuple[str, ...] | None
    interval: float | None = None  # seconds
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Onbuild(Instruction):
    """ONBUILD and its trigger."""

    expression: str  # the trigger text exactly as docker stores it in the image config
    # None when the trigger does not parse: BuildKit parses it only where it runs (a stage
    # FROM this one, or a build FROM the image), so only there is that an error.
    instruction: Instruction | None
    error: str = ""  # why it does not parse


@dataclass(frozen=True, slots=True, kw_only=True)
class Maintainer(Instruction):
    """MAINTAINER (deprecated)."""

    name: str


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions in order and what the parse learnt on the way."""

    instructions: tuple[Instruction, ...]
    directives: tuple[tuple[str, str], ...] = ()  # (name lower-cased, value), file order
    escape: str = "\\"
    warnings: tuple[str, ...] = ()
    lines: tuple[str, ...] = field(default=(), repr=False)  # source lines, without newlines
    filename: str = "Dockerfile"
    empty_continuations: tuple[int, ...] = ()  # lines for the NoEmptyContinuation check

    def source_line(self, n: int) -> str:
        """Line ``n`` (1-based) of the source, "" past the end."""
        return self.lines[n - 1] if 0 < n <= len(self.lines) else ""

    def directive(self, name: str) -> str | None:
        for key, value in self.directives:
            if key == name.lower():
                return value
        return None

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)
