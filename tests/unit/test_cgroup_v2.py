"""cgroup v2 step limits (builder.executor.cgroups), on a folder laid out like
/sys/fs/cgroup: this machine mounts v1 controllers, so the v2 files are simulated; the
integration tests in test_executor_limits.py run against whichever hierarchy the kernel has."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import ExecError
from builder.executor import cgroups


def _hierarchy(root: Path, session: str, *, session_delegates: bool) -> None:
    for folder in (root, root / session):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (folder / "cgroup.subtree_control").write_text("")
    if not session_delegates:
        # a cgroup with processes in it: the kernel refuses (EBUSY); a folder in its place
        # makes the write fail the same way here
        (root / session / "cgroup.subtree_control").unlink()
        (root / session / "cgroup.subtree_control").mkdir()


def test_limits_go_below_pybuilds_own_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hierarchy(tmp_path, "build.scope", session_delegates=True)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(cgroups, "own_cgroups", lambda: {"": "/build.scope"})
    group = cgroups._v2(256 << 20, 1.5, "step-1")
    assert group.dirs == (tmp_path / "build.scope" / "step-1",)
    assert (tmp_path / "build.scope" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (group.dirs[0] / "memory.max").read_text() == str(256 << 20)
    assert (group.dirs[0] / "cpu.max").read_text() == "150000 100000"


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback is root's")
def test_a_session_that_cannot_delegate_falls_back_to_a_cgroup_under_the_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hierarchy(tmp_path, "user.slice/session-3.scope", session_delegates=False)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(cgroups, "own_cgroups", lambda: {"": "/user.slice/session-3.scope"})
    # (the folder the kernel would make: pybuild/ gets its control files on creation)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kw: object) -> None:
        real_mkdir(self, *args, **kw)  # type: ignore[arg-type]
        if self == tmp_path / "pybuild":
            (self / "cgroup.controllers").write_text("cpu memory\n")
            (self / "cgroup.subtree_control").write_text("")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    group = cgroups._v2(64 << 20, None, "step-2")
    assert group.dirs == (tmp_path / "pybuild" / "step-2",)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory"
    assert (tmp_path / "pybuild" / "cgroup.subtree_control").read_text() == "+memory"
    assert (group.dirs[0] / "memory.max").read_text() == str(64 << 20)


def test_a_missing_controller_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hierarchy(tmp_path, "a.scope", session_delegates=True)
    (tmp_path / "a.scope" / "cgroup.controllers").write_text("pids\n")
    (tmp_path / "cgroup.controllers").write_text("pids\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(cgroups, "own_cgroups", lambda: {"": "/a.scope"})
    with pytest.raises(ExecError, match="does not offer memory"):
        cgroups._v2(1 << 20, None, "step-3")
