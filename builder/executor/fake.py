"""A scripted stand-in for ``run_step``, for unit tests of the code around the seam.

``FakeExecutor.run_step`` has the real signature. For each call it picks a ``Script`` (by
matching the argv, or the next one of a list), records the call, writes the script's file
changes into ``rootfs.upper`` as overlayfs would (deleted paths become whiteouts, replaced
directories become opaque), streams the scripted output and returns the scripted code.
Needs neither root nor a kernel feature: where a 0:0 device or a trusted xattr cannot be
made, it writes the layer-tar spelling (``.wh.NAME``, ``.wh..wh..opq``) that the layer
differ also reads.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from builder.errors import ExecError

from .spec import RootFS, RunSpec, StepInterrupted

__all__ = ["Script", "FakeExecutor"]


@dataclass(frozen=True)
class Script:
    """What one fake step does. ``files`` maps an absolute path to new content (``bytes``),
    or to ``None`` to delete it; ``dirs`` are created; ``opaque`` directories hide what the
    lower layers have below them. ``error`` makes ``run_step`` raise ``ExecError``;
    ``interrupt`` (a signal number) makes it raise ``StepInterrupted``."""

    exit_code: int = 0
    output: bytes = b""
    files: Mapping[str, bytes | None] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()
    error: str | None = None
    interrupt: int | None = None


@dataclass(frozen=True)
class Call:
    """One run the fake executor was asked for."""

    spec: RunSpec
    rootfs: RootFS


def _rel(path: str) -> str:
    rel = os.path.normpath("/" + path).lstrip("/")
    if not rel or rel.startswith(".."):
        raise ValueError(f"scripted path must name something below /: {path!r}")
    return rel


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    except PermissionError:
        (path.parent / f".wh.{path.name}").touch()


def _opaque(path: Path) -> None:
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        (path / ".wh..wh..opq").touch()


class FakeExecutor:
    """``scripts``: a list consumed in order, a mapping from argv to script, or a function
    of the ``RunSpec``. ``calls`` records every call."""

    def __init__(self, scripts: Sequence[Script] | Mapping[tuple[str, ...], Script]
                 | Callable[[RunSpec], Script] = ()) -> None:
        self._scripts = scripts
        self._next = 0
        self.calls: list[Call] = []

    def _script_for(self, spec: RunSpec) -> Script:
        if callable(self._scripts):
            return self._scripts(spec)
        if isinstance(self._scripts, Mapping):
            try:
                return self._scripts[spec.argv]
            except KeyError:
                raise AssertionError(f"no script for argv {spec.argv!r}") from None
        if self._next >= len(self._scripts):
            raise AssertionError(f"unexpected step {spec.argv!r}: only {len(self._scripts)} "
                                 "scripted")
        script = self._scripts[self._next]
        self._next += 1
        return script

    def run_step(self, spec: RunSpec, rootfs: RootFS, *, output: Callable[[bytes], None]) -> int:
        self.calls.append(Call(spec, rootfs))
        script = self._script_for(spec)
        if script.error is not None:
            raise ExecError(script.error)
        if rootfs.upper is None:
            raise ExecError("a RUN step needs an upper directory for its changes")
        upper = rootfs.upper
        for d in script.dirs:
            (upper / _rel(d)).mkdir(parents=True, exist_ok=True)
        for d in script.opaque:
            target = upper / _rel(d)
            target.mkdir(parents=True, exist_ok=True)
            _opaque(target)
        for path, content in script.files.items():
            target = upper / _rel(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(target):
                if target.is_dir() and not target.is_symlink():
                    raise AssertionError(f"scripted file {path} is a directory")
                target.unlink()
            if content is None:
                _whiteout(target)
            else:
                target.write_bytes(content)
        if script.output:
            output(script.output)
        if script.interrupt is not None:
            raise StepInterrupted(script.interrupt)
        return script.exit_code
