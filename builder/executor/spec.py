"""The values that cross the executor's boundary: what to run and on what.

Owns ``RunSpec`` (one RUN step's process), ``Mount`` (a ``RUN --mount`` already resolved
by the caller to a host path or a tmpfs), ``RootFS`` (overlay lower dirs and the upper dir
that collects the step's changes), ``DirRoot`` (a plain folder the step runs on and
changes in place, where overlay cannot be mounted), ``StepInterrupted``, and the defaults BuildKit and
Docker apply to a build step (PATH, hostname, capability set).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from builder.errors import ExecError

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_HOSTNAME",
    "DEFAULT_CAPABILITIES",
    "MOUNT_TYPES",
    "DirRoot",
    "Mount",
    "RootFS",
    "RunSpec",
    "StepInterrupted",
    "capability_mask",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"

# Docker's default set for containers and build steps, by kernel capability number.
DEFAULT_CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}

# Every type a caller may hand over; all but tmpfs are binds of a host path it prepared.
MOUNT_TYPES = ("bind", "cache", "secret", "ssh", "tmpfs")

Network = Literal["default", "none", "host"]


def capability_mask(names: Sequence[str] | None = None) -> int:
    """The 64-bit mask of ``names`` (default: Docker's set), as /proc/PID/status shows it."""
    mask = 0
    for name in DEFAULT_CAPABILITIES if names is None else names:
        mask |= 1 << DEFAULT_CAPABILITIES[name]
    return mask


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount inside the step's root, set up before pivot_root.

    ``bind``/``cache``/``secret``/``ssh`` bind ``source`` (a host file or directory) at
    ``target``; ``tmpfs`` mounts a fresh tmpfs. ``options`` are mount(8)-style words:
    ``nosuid``, ``nodev``, ``noexec`` become flags, the rest (``size=64m``, ``mode=1777``)
    go to the filesystem as data.
    """

    type: str
    target: str
    source: Path | None = None
    readonly: bool = False
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in MOUNT_TYPES:
            raise ExecError(f"unsupported mount type {self.type!r} for {self.target}",
                            hint=f"one of: {', '.join(MOUNT_TYPES)}")
        if not self.target.startswith("/"):
            raise ExecError(f"mount target must be an absolute path: {self.target!r}")
        if self.type != "tmpfs" and self.source is None:
            raise ExecError(f"{self.type} mount on {self.target} has no source")


@dataclass(frozen=True, slots=True)
class RootFS:
    """An overlay: ``lowers`` top first (read-only snapshots), ``upper`` collects the
    changes, ``work`` is overlayfs' scratch dir on the same filesystem as ``upper``.

    ``upper=None`` (and ``work=None``) makes a read-only view, for ``mounted_rootfs`` only.
    """

    lowers: tuple[Path, ...]
    upper: Path | None
    work: Path | None

    def __init__(self, lowers: Sequence[Path], upper: Path | None, work: Path | None) -> None:
        object.__setattr__(self, "lowers", tuple(Path(p) for p in lowers))
        object.__setattr__(self, "upper", None if upper is None else Path(upper))
        object.__setattr__(self, "work", None if work is None else Path(work))
        if (upper is None) != (work is None):
            raise ExecError("an overlay needs both an upper and a work directory, or neither")


@dataclass(frozen=True, slots=True)
class DirRoot:
    """A plain folder used as the step's root as it is: the step changes it in place. For
    the copy-based snapshotter, which copies the layers below into ``path`` first and
    compares afterwards (see ``builder.layers.copydiff``)."""

    path: Path
    # Filled by ``run_step``: the directories (relative to ``path``) in which it made mount
    # points and took them out again. Their ctime moved though the step may not have
    # touched them; with an overlay they would not be in the layer.
    touched: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One RUN step's process. ``argv`` already has SHELL applied for the shell form;
    ``user`` is a Dockerfile USER value ("" means root)."""

    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = DEFAULT_HOSTNAME
    network: Network = "default"
    mounts: tuple[Mount, ...] = ()
    memory: int | None = None
    cpus: float | None = None
    extra_hosts: tuple[tuple[str, str], ...] = field(default=())
    insecure: bool = False  # RUN --security=insecure: every capability, not docker's default set
    shm_size: int | None = None  # bytes of /dev/shm; None: docker's 64m, nosuid noexec nodev
    ulimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard), -1 unlimited; else inherited

    def __post_init__(self) -> None:
        if not self.argv:
            raise ExecError("RUN has no command")
        if self.network not in ("default", "none", "host"):
            raise ExecError(f"unknown network mode {self.network!r}",
                            hint="one of: default, none, host")
        if not self.cwd.startswith("/"):
            raise ExecError(f"working directory must be absolute: {self.cwd!r}")
        if self.memory is not None and self.memory <= 0:
            raise ExecError(f"memory limit must be positive: {self.memory}")
        if self.cpus is not None and self.cpus <= 0:
            raise ExecError(f"cpus must be positive: {self.cpus}")
        if self.shm_size is not None and self.shm_size <= 0:
            raise ExecError(f"/dev/shm size must be positive: {self.shm_size}")


class StepInterrupted(ExecError):
    """SIGINT or SIGTERM arrived during a step; everything it made has been removed.

    ``exit_code`` is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"build interrupted by {name}")
        self.signum = signum
        self.exit_code = 128 + signum
