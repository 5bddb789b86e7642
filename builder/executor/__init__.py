"""The executor: runs a RUN step's process in Linux namespaces on an overlay of snapshots.

No daemon, no runc: Python, ctypes and the kernel. ``run_step`` is the seam the solver
calls; ``fake.FakeExecutor`` stands in for it in unit tests.
"""
from __future__ import annotations

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
