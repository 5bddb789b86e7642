"""``run_step``: the builder's side of running one RUN step in namespaces.

Owns preparing a step (the resolv.conf and hosts files, the overlay options or the
plain root folder, the cgroup), forking the sandbox (see ``sandbox``), writing a rootless
child's id maps, streaming its output, turning its reports into an exit code or an
``ExecError``, ending it on SIGINT/SIGTERM, and cleaning up: stubs out of the upper dir,
cgroup and temp dir gone.
Mounts all live in the step's own mount namespace, so they die with its processes.
"""
from __future__ import annotations

import functools
import json
import os
import pwd
import selectors
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable

from builder.errors import ExecError

from . import libc
from .cgroups import create_cgroup
from .rootfs import OVERLAY_FAILED, Stub, overlay_options, remove_stubs
from .sandbox import Plan, outer_child
from .spec import DEFAULT_PATH, DirRoot, RootFS, RunSpec, StepInterrupted
from .userns import in_user_namespace, subids, write_id_maps

__all__ = ["interrupt_steps", "run_step", "step_owner"]

_running: set["_Step"] = set()
_running_lock = threading.Lock()


class _Step:
    """One running step as the builder sees it: the two child pids and any signal."""

    def __init__(self, outer: int) -> None:
        self.outer = outer
        self.inner: int | None = None
        self.signum: int | None = None

    def kill(self, signum: int) -> None:
        self.signum = self.signum or signum
        # SIGKILL to PID 1 of the namespace: the kernel then kills every process in it.
        for pid in (self.inner, self.outer):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def interrupt_steps(signum: int) -> None:
    """End every running step as if ``signum`` had arrived; each ``run_step`` then raises
    ``StepInterrupted``. For callers that run steps outside the main thread."""
    with _running_lock:
        steps = list(_running)
    for step in steps:
        step.kill(signum)


def _hosts_file(spec: RunSpec) -> str:
    lines = [f"127.0.0.1\tlocalhost {spec.hostname}", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{host}" for host, ip in spec.extra_hosts]
    return "\n".join(lines) + "\n"


def _resolv_conf() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def _env(spec: RunSpec) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in spec.env:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def _ns_owner(st: os.stat_result) -> tuple[int, int]:
    """A host file's owner as the step's user namespace sees it (see ``userns.write_id_maps``)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    found = []
    for own, host, sub in ((uid, st.st_uid, subids("/etc/subuid", name, uid)),
                           (gid, st.st_gid, subids("/etc/subgid", name, uid))):
        if host == own:
            found.append(0)
        elif sub is not None and sub[0] <= host < sub[0] + sub[1]:
            found.append(1 + host - sub[0])
        else:
            found.append(65534)
    return found[0], found[1]


@functools.lru_cache(maxsize=256)
def step_owner(uid: int, gid: int) -> tuple[int, int]:
    """A host owner as a rootless step's user namespace sees it (65534 when unmapped): what
    a layer made rootless must record."""
    return _ns_owner(os.stat_result((0, 0, 0, 0, uid, gid, 0, 0, 0, 0)))


def run_step(spec: RunSpec, rootfs: RootFS | DirRoot, *,
             output: Callable[[bytes], None]) -> int:
    """Run ``spec`` on ``rootfs``; stream its merged stdout/stderr to ``output``; return its
    exit code (128+N when killed by signal N). The step's changes land in ``rootfs.upper``
    (in the folder itself for a ``DirRoot``)."""
    if isinstance(rootfs, DirRoot):
        if not rootfs.path.is_dir():
            raise ExecError(f"root directory {rootfs.path} does not exist")
    else:
        if rootfs.upper is None or rootfs.work is None:
            raise ExecError("a RUN step needs an upper directory for its changes")
        for path in (*rootfs.lowers, rootfs.upper, rootfs.work):
            if not path.is_dir():
                raise ExecError(f"layer directory {path} does not exist")
    # Unprivileged (pybuild did not enter its own namespace): each step makes a user
    # namespace. Already in one (rootless pybuild is its root): the step needs no other,
    # but the overlay still needs userxattr and /dev its host nodes bound.
    new_userns = os.geteuid() != 0
    rootless = new_userns or in_user_namespace()
    tmp = Path(tempfile.mkdtemp(prefix="pbr"))
    cgroup = None
    try:
        files = []
        # As BuildKit: no /etc/hostname (the image's stays, writable), only these two.
        for target, content in (("/etc/resolv.conf", _resolv_conf()),
                                ("/etc/hosts", _hosts_file(spec))):
            host_file = tmp / target.rsplit("/", 1)[1]
            host_file.write_text(content)
            host_file.chmod(0o644)
            files.append((target, str(host_file)))
        linkdir = tmp / "l"
        linkdir.mkdir()
        if isinstance(rootfs, DirRoot):
            # The folder is bound onto itself in the step's namespace (pivot_root wants a
            # mount point); the stubs made for mounts are taken out of it again afterwards.
            options, merged, changed = "", rootfs.path, rootfs.path
            discard: tuple[Path, ...] = ()
        else:
            assert rootfs.upper is not None and rootfs.work is not None
            options = overlay_options(rootfs, linkdir, relative=True, userxattr=rootless)
            merged = tmp / "m"
            merged.mkdir()
            changed = rootfs.upper
            discard = (rootfs.upper, rootfs.work)
        cgroup = create_cgroup(spec.memory, spec.cpus)
        plan = Plan(argv=spec.argv, env=_env(spec), cwd=spec.cwd, user=spec.user,
                    hostname=spec.hostname, network=spec.network, mounts=spec.mounts,
                    files=tuple(files), linkdir=str(linkdir), overlay=options,
                    merged=str(merged), upper=str(changed), userns=new_userns,
                    rootless=rootless,
                    cgroup=cgroup, last_cap=libc.last_cap(), parent_pid=os.getpid(),
                    insecure=spec.insecure, shm_size=spec.shm_size, ulimits=spec.ulimits)
        code, stubs = _supervise(plan, changed, discard, output)
        if isinstance(rootfs, DirRoot):
            rootfs.touched.extend(sorted({stub.path.rpartition("/")[0] for stub in stubs}))
        return code
    finally:
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def _supervise(plan: Plan, changed: Path, discard: tuple[Path, ...],
               output: Callable[[bytes], None]) -> tuple[int, list[Stub]]:
    """Fork the sandbox, relay its output and reports, end it on a signal; return the exit
    code and the stubs made. ``changed`` is where the step's changes land (stubs are
    removed from it); ``discard`` is removed when the step is interrupted (a half-made
    upper directory)."""
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    sync_r, sync_w = os.pipe() if plan.userns else (None, None)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        outer_child(plan, out_w, status_w, sync_r, devnull)
    for fd in (out_w, status_w, sync_r, devnull):
        if fd is not None:
            os.close(fd)
    step = _Step(pid)
    with _running_lock:
        _running.add(step)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: step.kill(signum))
    stubs: list[Stub] = []
    errors: list[str] = []
    wait_status: int | None = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(out_r, selectors.EVENT_READ, "out")
            sel.register(status_r, selectors.EVENT_READ, "status")
            pending = b""
            while sel.get_map():
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                    elif key.data == "out":
                        output(chunk)
                    else:
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            kind, _, text = line.decode("utf-8", "surrogateescape").partition(" ")
                            if kind == "P":
                                step.inner = int(text)
                                if step.signum is not None:
                                    step.kill(step.signum)
                            elif kind == "C":
                                fields = json.loads(text)
                                if fields["copied_up"] is not None:
                                    fields["copied_up"] = tuple(fields["copied_up"])
                                stubs.append(Stub(**fields))
                            elif kind == "E":
                                errors.append(text)
                            elif kind == "W":
                                wait_status = int(text)
                            elif kind == "U":
                                assert sync_w is not None
                                try:
                                    write_id_maps(pid)
                                except ExecError as e:
                                    errors.append(e.message)
                                    step.kill(signal.SIGKILL)
                                else:
                                    os.write(sync_w, b"G")
    except BaseException:
        step.kill(signal.SIGKILL)
        raise
    finally:
        for fd in (out_r, status_r, sync_w):
            if fd is not None:
                os.close(fd)
        os.waitpid(pid, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with _running_lock:
            _running.discard(step)
        if step.signum is None or step.signum == signal.SIGKILL:
            remove_stubs(changed, stubs, _ns_owner if plan.userns else None)
    if step.signum is not None and step.signum != signal.SIGKILL:
        # The step is half done: its upper directory is worth nothing, drop it.
        for path in discard:
            shutil.rmtree(path, ignore_errors=True)
        raise StepInterrupted(step.signum)
    if errors:
        hint = None
        if errors[0].startswith(OVERLAY_FAILED):
            hint = ("this kernel or the store's filesystem refuses overlayfs here: "
                    "PYBUILD_SNAPSHOTTER=copy (or auto, the default) runs steps on copies "
                    "of their root filesystem instead")
        raise ExecError(errors[0], hint=hint)
    if wait_status is None:
        raise ExecError("the step's sandbox process ended without reporting a status")
    code = os.waitstatus_to_exitcode(wait_status)
    return (code if code >= 0 else 128 - code), stubs
