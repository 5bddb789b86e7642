"""Per-step resource limits through cgroups: ``memory`` (bytes) and ``cpus`` (a float).

Owns finding the hierarchy (v2 when /sys/fs/cgroup has cgroup.controllers, the v1 memory and
cpu controllers otherwise), creating one cgroup per step below the builder's own, writing
the limits, and removing it afterwards. The step's process joins it itself just before it execs.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ExecError

__all__ = ["StepCgroup", "create_cgroup", "own_cgroups"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class StepCgroup:
    """The directories of one step's cgroup (one per v1 controller, one for v2)."""

    dirs: tuple[Path, ...]

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs)

    def remove(self) -> None:
        for d in self.dirs:
            # A cgroup whose last task is still being torn down answers EBUSY for a moment.
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise ExecError(f"cannot remove the step's cgroup {d}: {e.strerror}") from e
                    time.sleep(0.02)


def own_cgroups() -> dict[str, str]:
    """controller name ('' for v2) -> this process' cgroup path."""
    found: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                found[c] = path
    return found


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise ExecError(f"cannot set {path.name}={value.strip()} on the step's cgroup: "
                        f"{e.strerror}") from e


def _mkdir(path: Path, what: str) -> None:
    try:
        path.mkdir()
    except OSError as e:
        raise ExecError(f"cannot create a cgroup for the step's {what} limit at {path}: "
                        f"{e.strerror}", hint="resource limits need root or a delegated cgroup"
                        ) from e


def _v2(memory: int | None, cpus: float | None, name: str) -> StepCgroup:
    wanted = {c for c, on in (("memory", memory), ("cpu", cpus)) if on is not None}
    own = CGROUP_ROOT / own_cgroups().get("", "/").lstrip("/")
    try:
        base = _delegate(own, wanted)
    except ExecError:
        # On a systemd host pybuild usually runs in a session or service cgroup that has
        # processes in it, and v2 lets no such cgroup hand controllers to children. As
        # root, step cgroups then go below a cgroup of pybuild's own under the root (which
        # is exempt from that rule), as docker's cgroupfs driver does.
        if os.geteuid() != 0 or own == CGROUP_ROOT:
            raise
        _delegate(CGROUP_ROOT, wanted)
        base = CGROUP_ROOT / "pybuild"
        try:
            base.mkdir(exist_ok=True)
        except OSError as e:
            raise ExecError(f"cannot create {base}: {e.strerror}") from e
        base = _delegate(base, wanted)
    path = base / name
    _mkdir(path, " and ".join(sorted(wanted)))
    group = StepCgroup((path,))
    try:
        if memory is not None:
            _write(path / "memory.max", str(memory))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        if cpus is not None:
            _write(path / "cpu.max", f"{max(1000, int(cpus * _PERIOD_US))} {_PERIOD_US}")
    except BaseException:
        group.remove()
        raise
    return group


def _delegate(base: Path, wanted: set[str]) -> Path:
    """``base``, with the ``wanted`` controllers enabled for its children (cgroup v2)."""
    try:
        available = set((base / "cgroup.controllers").read_text().split())
    except OSError as e:
        raise ExecError(f"cannot read the controllers of {base}: {e.strerror}") from e
    missing = wanted - available
    if missing:
        raise ExecError(f"cgroup v2 at {base} does not offer {', '.join(sorted(missing))}",
                        hint="enable the controller in the parent's cgroup.subtree_control")
    try:
        enabled = set((base / "cgroup.subtree_control").read_text().split())
        if wanted - enabled:
            (base / "cgroup.subtree_control").write_text(
                " ".join(f"+{c}" for c in sorted(wanted - enabled)))
    except OSError as e:
        raise ExecError(f"cannot enable {', '.join(sorted(wanted))} below {base}: "
                        f"{e.strerror}", hint="on cgroup v2 a cgroup with processes in it "
                        "cannot delegate controllers; run pybuild in its own cgroup") from e
    return base


def _v1(memory: int | None, cpus: float | None, name: str) -> StepCgroup:
    own = own_cgroups()
    dirs: list[Path] = []
    group = StepCgroup(())
    try:
        for controller, on in (("memory", memory), ("cpu", cpus)):
            if on is None:
                continue
            mountpoint = CGROUP_ROOT / controller
            if not (mountpoint / "cgroup.procs").exists():
                raise ExecError(f"no cgroup {controller} controller is mounted at {mountpoint}",
                                hint="mount cgroup v2 or the v1 controller to limit resources")
            path = mountpoint / own.get(controller, "/").lstrip("/") / name
            _mkdir(path, controller)
            dirs.append(path)
            group = StepCgroup(tuple(dirs))
            if controller == "memory":
                assert memory is not None
                _write(path / "memory.limit_in_bytes", str(memory))
                if (path / "memory.memsw.limit_in_bytes").exists():
                    _write(path / "memory.memsw.limit_in_bytes", str(memory))
                try:  # keep the step from swapping past its limit where memsw is off
                    (path / "memory.swappiness").write_text("0")
                except OSError:
                    pass
            else:
                assert cpus is not None
                _write(path / "cpu.cfs_period_us", str(_PERIOD_US))
                _write(path / "cpu.cfs_quota_us", str(max(1000, int(cpus * _PERIOD_US))))
    except BaseException:
        group.remove()
        raise
    return group


def create_cgroup(memory: int | None, cpus: float | None) -> StepCgroup | None:
    """A fresh cgroup with the limits set, or None when the step has no limits."""
    if memory is None and cpus is None:
        return None
    name = f"pybuild-{os.urandom(6).hex()}"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return _v2(memory, cpus, name)
    return _v1(memory, cpus, name)
