"""The executor: runs a RUN step's process in Linux namespaces on an overlay of snapshots.

No daemon, no runc: Python, ctypes and the kernel. ``run_step`` is the seam the solver
calls; ``fake.FakeExecutor`` stands in for it in unit tests.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.lazy import exports

if TYPE_CHECKING:
    from .rootfs import enter_private_mount_namespace, mounted_rootfs
    from .run import interrupt_steps, run_step, step_owner
    from .spec import (
        DEFAULT_CAPABILITIES,
        DEFAULT_HOSTNAME,
        DEFAULT_PATH,
        DirRoot,
        Mount,
        RootFS,
        RunSpec,
        StepInterrupted,
    )
    from .userns import enter_user_namespace, in_user_namespace
    from .users import resolve_user

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_HOSTNAME",
    "DEFAULT_PATH",
    "DirRoot",
    "Mount",
    "RootFS",
    "RunSpec",
    "StepInterrupted",
    "enter_private_mount_namespace",
    "enter_user_namespace",
    "in_user_namespace",
    "interrupt_steps",
    "mounted_rootfs",
    "resolve_user",
    "run_step",
    "step_owner",
]

# Each name is loaded from its module on first use: a build whose steps run no process (a
# COPY, a WORKDIR) imports the mount helpers only, not the sandbox, cgroups and user
# namespaces (about 10 ms of every start on the benchmark's VM).
_HOME = {
    "enter_private_mount_namespace": "rootfs", "mounted_rootfs": "rootfs",
    "interrupt_steps": "run", "run_step": "run", "step_owner": "run",
    "DEFAULT_CAPABILITIES": "spec", "DEFAULT_HOSTNAME": "spec", "DEFAULT_PATH": "spec",
    "DirRoot": "spec", "Mount": "spec", "RootFS": "spec", "RunSpec": "spec",
    "StepInterrupted": "spec",
    "enter_user_namespace": "userns", "in_user_namespace": "userns",
    "resolve_user": "users",
}


__getattr__ = exports(__name__, _HOME)
