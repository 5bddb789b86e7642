"""The forked side of a step: namespaces, the root's mounts, pivot_root, user, exec.

Two processes run this code. The *outer* child (forked from the builder) leaves the
builder's session, joins the step's cgroup, optionally enters a user namespace (and waits
for the builder to write its id maps), unshares mount/UTS/IPC/PID (and network) namespaces
and forks the *inner* child, which is PID 1 of the new PID namespace. The inner child
mounts the overlay (or binds a plain root folder onto itself), /proc, /dev, /sys and the
step's files and mounts, pivots into the root, sets hostname, user, umask and
capabilities, and execs the step. The outer child waits and reports the inner one's wait
status.

Both talk to the builder through one pipe, one line per message:
``P pid`` (the inner child's host pid), ``C json`` (a stub made), ``U`` (id maps wanted),
``E text`` (setup failed), ``W status`` (the step's wait status). Nothing here returns:
every path ends in exec or ``os._exit``.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import resource
import signal
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NoReturn

from builder.errors import BuildError, ExecError

from . import libc, seccomp
from .cgroups import StepCgroup, own_cgroups
from .rootfs import OVERLAY_FAILED, make_stub
from .spec import DEFAULT_CAPABILITIES, Mount
from .userns import UNMAPPED_HINT, is_mapped
from .users import lookup_user

__all__ = ["Plan", "outer_child"]

_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
            "urandom": (1, 9), "tty": (5, 0)}
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
              "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
# Docker's masked and read-only paths: kernel interfaces a build step has no business with.
_MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
           "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
           "/sys/firmware", "/sys/devices/virtual/powercap")
_CGROUP_ROOT = "/sys/fs/cgroup"
_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_FLAG_WORDS = {"ro": libc.MS_RDONLY, "nosuid": libc.MS_NOSUID, "nodev": libc.MS_NODEV,
               "noexec": libc.MS_NOEXEC}
# statvfs f_flag bits -> mount flags that a remount inside a user namespace must keep.
_ST_TO_MS = ((1, libc.MS_RDONLY), (2, libc.MS_NOSUID), (4, libc.MS_NODEV), (8, libc.MS_NOEXEC),
             (1024, 1024), (2048, 2048), (4096, 1 << 21))


@dataclass(frozen=True)
class Plan:
    """Everything the children need, computed by the builder before it forks."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: str
    hostname: str
    network: str
    mounts: tuple[Mount, ...]
    files: tuple[tuple[str, str], ...]      # (target in the root, host file) bound read-only
    linkdir: str                            # cwd for the relative overlay options
    overlay: str                            # "": ``merged`` is a plain folder, bound as is
    merged: str
    upper: str                              # where stubs land (the folder itself if plain)
    userns: bool                            # create a user namespace for the step
    rootless: bool                          # in a user namespace, one made here or earlier
    cgroup: StepCgroup | None
    last_cap: int
    parent_pid: int
    insecure: bool = False                  # keep every capability (--security=insecure)
    shm_size: int | None = None             # --shm-size: /dev/shm as BuildKit mounts it then
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: (name, soft, hard), -1 unlimited


def _send(fd: int, kind: str, text: str = "") -> None:
    os.write(fd, f"{kind} {text}".rstrip().encode("utf-8", "surrogateescape") + b"\n")


def _describe(e: BaseException) -> str:
    if isinstance(e, BuildError):
        return e.message
    if isinstance(e, OSError):
        if e.filename is not None:
            return f"{e.strerror}: {e.filename}"
        return e.strerror or str(e)
    return f"{type(e).__name__}: {e}"


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD,
                signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def outer_child(plan: Plan, out_fd: int, status_fd: int, sync_fd: int | None,
                devnull_fd: int) -> NoReturn:
    """Runs in the builder's forked child; never returns."""
    try:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        _reset_signals()
        os.setsid()  # the terminal's Ctrl-C reaches the builder only; it ends the step itself
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != plan.parent_pid:
            os._exit(1)
        os.dup2(devnull_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        # The builder's other descriptors must not live on here: a write end of another
        # step's pipe, forked in the moment before its owner closed it, would hold back that
        # step's end of output until this step ends.
        keep = {0, 1, 2, status_fd, sync_fd}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                try:
                    os.close(int(name))
                except OSError:
                    pass
        if plan.userns:
            libc.unshare(libc.CLONE_NEWUSER)
            _send(status_fd, "U")
            assert sync_fd is not None
            if os.read(sync_fd, 1) != b"G":
                os._exit(1)
        flags = libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWPID
        if plan.network == "none":
            flags |= libc.CLONE_NEWNET
        libc.unshare(flags)
        # Before any other mount: nothing we mount may propagate to the host.
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        pid = os.fork()
        if pid == 0:
            _inner_child(plan, status_fd)
        _send(status_fd, "P", str(pid))
        _, status = os.waitpid(pid, 0)
        _send(status_fd, "W", str(status))
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - any failure must reach the builder as text
        try:
            _send(status_fd, "E", _describe(e))
        finally:
            os._exit(1)


def _statvfs_flags(path: str) -> int:
    flags = 0
    got = os.statvfs(path).f_flag
    for st_bit, ms_bit in _ST_TO_MS:
        if got & st_bit:
            flags |= ms_bit
    return flags


def _bind(source: str, target: str | Path, *, readonly: bool, extra: int = 0) -> None:
    libc.mount(source, target, None, libc.MS_BIND | libc.MS_REC)
    if readonly or extra:
        flags = _statvfs_flags(str(target)) | extra | (libc.MS_RDONLY if readonly else 0)
        libc.mount(None, target, None, libc.MS_REMOUNT | libc.MS_BIND | flags)


def _split_options(options: tuple[str, ...]) -> tuple[int, str]:
    flags = 0
    data = []
    for word in options:
        if word in _FLAG_WORDS:
            flags |= _FLAG_WORDS[word]
        elif word not in ("rw", "bind", "rbind"):
            data.append(word)
    return flags, ",".join(data)


class _Root:
    """The merged root before pivot_root: makes stubs and reports each one."""

    def __init__(self, plan: Plan, status_fd: int) -> None:
        self.path = Path(plan.merged)
        self.upper = Path(plan.upper)
        self.status_fd = status_fd

    def target(self, target: str, *, is_dir: bool, keep: bool = False) -> Path:
        """The real path of ``target``, made if missing. ``keep``: what is made stays in
        the layer (the runtime's own mount points: BuildKit's stub cleaner takes out only
        /etc/resolv.conf, /etc/hosts and the step's mounts, so runc's /proc, /dev and /sys
        remain in a layer whose image had none)."""
        real, made = make_stub(self.path, self.upper, target, is_dir)
        if not keep:
            for stub in made:
                _send(self.status_fd, "C", json.dumps(dataclasses.asdict(stub)))
        return real


def _setup_dev(root: _Root, rootless: bool, shm_size: int | None) -> None:
    dev = root.target("/dev", is_dir=True, keep=True)
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME,
               "mode=755,size=65536k")
    for name, (major, minor) in _DEVICES.items():
        node = dev / name
        try:
            if rootless:
                raise PermissionError
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(node, 0o666)
        except PermissionError:
            # No mknod in a user namespace: bind the host's node, as runc does.
            node.touch(mode=0o666)
            _bind(f"/dev/{name}", node, readonly=False)
    for sub in ("pts", "shm", "mqueue"):
        (dev / sub).mkdir(mode=0o755)
    try:
        libc.mount("devpts", dev / "pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5")
    except OSError:
        # gid 5 (tty) may not exist in a user namespace's map.
        libc.mount("devpts", dev / "pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")
    if shm_size:
        # BuildKit's --shm-size is a tmpfs mount of the step at /dev/shm: nosuid and the size
        libc.mount("shm", dev / "shm", "tmpfs", libc.MS_NOSUID, f"mode=1777,size={shm_size}")
    else:  # the runtime's default, as containerd's spec makes it
        libc.mount("shm", dev / "shm", "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV,
                   "mode=1777,size=65536k")
    try:
        libc.mount("mqueue", dev / "mqueue", "mqueue",
                   libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV)
    except OSError:
        os.rmdir(dev / "mqueue")
    for name, link in _DEV_LINKS.items():
        os.symlink(link, dev / name)


def _host_devices(root: _Root) -> None:
    """RUN --security=insecure: every device node of the host's /dev, made again in the
    step's /dev (as containerd's WithHostDevices; pts, shm and mqueue stay the step's own)."""
    dev = root.path / "dev"
    for folder, dirs, files in os.walk("/dev"):
        rel = os.path.relpath(folder, "/dev")
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in ("pts", "shm", "mqueue")]
        for name in files:
            host = os.path.join(folder, name)
            try:
                st = os.lstat(host)
                if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                    continue
                node = dev / rel / name
                if os.path.lexists(node):
                    continue
                node.parent.mkdir(parents=True, exist_ok=True)
                os.mknod(node, st.st_mode, st.st_rdev)
                os.chown(node, st.st_uid, st.st_gid)
                os.chmod(node, stat.S_IMODE(st.st_mode))
            except OSError:
                continue  # a node that went away, or one this kernel will not let us make


def _setup_sys(root: _Root, *, writable: bool = False, cgroup: StepCgroup | None = None) -> None:
    sysdir = root.target("/sys", is_dir=True, keep=True)
    try:
        libc.mount("sysfs", sysdir, "sysfs",
                   (0 if writable else libc.MS_RDONLY) | libc.MS_NOSUID | libc.MS_NOEXEC
                   | libc.MS_NODEV)
    except PermissionError:
        # A user namespace sharing the host's network namespace may not mount sysfs: bind
        # the host's (recursively: its submounts are locked to it) and hide the cgroup tree.
        _bind("/sys", sysdir, readonly=True, extra=libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV)
        if (sysdir / "fs" / "cgroup").is_dir():
            libc.mount("tmpfs", sysdir / "fs" / "cgroup", "tmpfs",
                       libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV)
        return
    if (sysdir / "fs" / "cgroup").is_dir():
        try:
            _setup_cgroup(sysdir / "fs" / "cgroup", cgroup.dirs if cgroup else (), writable=writable)
        except OSError:
            pass  # a host without cgroups there, or one that refuses: the folder stays empty


def _setup_cgroup(target: Path, step_dirs: tuple[Path, ...], *, writable: bool) -> None:
    """/sys/fs/cgroup as runc shows it to a container without a cgroup namespace: each
    hierarchy the host mounts there, rooted at the cgroup the step runs in (its own one with
    --memory/--cpus, else the builder's), read-only; cgroup v1 controllers side by side on a
    tmpfs, as docker lays them out. A hierarchy that cannot be shown is left out."""
    flags = libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV
    hierarchies = _host_cgroups()
    own = own_cgroups()
    unified = [h for h in hierarchies if h.point == _CGROUP_ROOT and h.fstype == "cgroup2"]
    if unified:
        _bind(_cgroup_source(unified[0], step_dirs, own), target, readonly=not writable, extra=flags)
        return
    v1 = [h for h in hierarchies if h.fstype == "cgroup" and os.path.dirname(h.point) == _CGROUP_ROOT]
    if not v1:
        return
    libc.mount("tmpfs", target, "tmpfs", flags, "mode=755")
    for hierarchy in v1:
        name = os.path.basename(hierarchy.point)
        try:
            (target / name).mkdir()
            _bind(_cgroup_source(hierarchy, step_dirs, own), target / name,
                  readonly=not writable, extra=flags)
        except OSError:
            continue
    for entry in os.scandir(_CGROUP_ROOT):  # cpu -> cpu,cpuacct and the like
        if entry.is_symlink() and not (target / entry.name).exists():
            os.symlink(os.readlink(entry.path), target / entry.name)
    if not writable:
        libc.mount(None, target, None, libc.MS_REMOUNT | libc.MS_RDONLY | flags, "mode=755")


class _Hierarchy(NamedTuple):
    """A cgroup mount of the host: where, cgroup or cgroup2, the folder of the hierarchy it
    shows, and its super options (a v1 one's controllers among them)."""

    point: str
    fstype: str
    root: str
    options: frozenset[str]


def _host_cgroups() -> list[_Hierarchy]:
    """Every cgroup mount of the host at or below /sys/fs/cgroup."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            point = fields[4].replace("\\040", " ")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", "cgroup2") and (point == _CGROUP_ROOT
                                                    or point.startswith(_CGROUP_ROOT + "/")):
                found.append(_Hierarchy(point, fstype, fields[3], frozenset(fields[dash + 3].split(","))))
    return found


def _cgroup_source(hierarchy: _Hierarchy, step_dirs: tuple[Path, ...], own: dict[str, str]) -> str:
    """The host folder of the cgroup the step runs in, within ``hierarchy``: the step's own
    (``step_dirs``), else this process' (``own``: ``cgroups.own_cgroups()``)."""
    point = hierarchy.point
    for d in step_dirs:
        if str(d).startswith(point + "/"):
            return str(d)
    keys = [""] if hierarchy.fstype == "cgroup2" else sorted(hierarchy.options & own.keys())
    if keys and own.get(keys[0]) is not None:
        rel = os.path.relpath(own[keys[0]], hierarchy.root)
        if rel != "." and not rel.startswith("..") and os.path.isdir(os.path.join(point, rel)):
            return os.path.join(point, rel)
    return point


def _mask(root: Path) -> None:
    for path in _MASKED:
        where = root / path.lstrip("/")
        try:
            if where.is_dir():
                libc.mount("tmpfs", where, "tmpfs", libc.MS_RDONLY)
            elif where.exists():
                _bind("/dev/null", where, readonly=False)
        except OSError:
            continue  # absent on this kernel, or not ours to hide
    for path in _READONLY:
        where = root / path.lstrip("/")
        if where.exists():
            try:
                _bind(str(where), where, readonly=True)
            except OSError:
                continue


def _user_mount(root: _Root, mount: Mount) -> None:
    flags, data = _split_options(mount.options)
    if mount.type == "tmpfs":
        target = root.target(mount.target, is_dir=True)
        libc.mount("tmpfs", target, "tmpfs",
                   flags | (libc.MS_RDONLY if mount.readonly else 0), data or None)
        return
    assert mount.source is not None
    source = str(mount.source)
    if not os.path.exists(source):
        raise FileNotFoundError(2, f"source of the {mount.type} mount on {mount.target} "
                                   f"does not exist", source)
    target = root.target(mount.target, is_dir=os.path.isdir(source))
    _bind(source, target, readonly=mount.readonly, extra=flags & ~libc.MS_RDONLY)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), 0x8913, req))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sh14x", b"lo", flags | 0x1 | 0x40))


def _find_executable(name: str, env: dict[str, str]) -> str:
    if "/" in name:
        return name
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, f'exec: "{name}": executable file not found in $PATH')


def _set_ulimits(limits: tuple[tuple[str, int, int], ...]) -> None:
    """The step's rlimits, as runc sets the spec's before it execs (the others stay the
    builder's, as BuildKit leaves them). ``resource`` is imported with this module: after
    pivot_root no module can be found."""
    for name, soft, hard in limits:
        which = getattr(resource, f"RLIMIT_{name.upper()}")
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as e:
            have = resource.getrlimit(which)[1]
            shown = "unlimited" if have == resource.RLIM_INFINITY else str(have)
            # not an OSError: that would read as a file the user namespace cannot map
            raise ExecError(f"--ulimit {name}={soft}:{hard}: {e} (the builder's hard limit is "
                            f"{shown}; only a builder with CAP_SYS_RESOURCE may go above it)") from None


def _inner_child(plan: Plan, status_fd: int) -> NoReturn:
    """PID 1 of the step's PID namespace; never returns."""
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Session and group leader of its own namespace, as runc makes a container's first
        # process: `kill 0` in a step then reaches the step's processes, not the outer child.
        os.setsid()
        os.umask(0o022)  # for what we make (stubs, WORKDIR) as for the step itself
        # Opened now, written just before exec: setup memory is not the step's to pay for,
        # and after pivot_root the host's cgroup tree is out of sight.
        cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC)
                      for p in (plan.cgroup.procs_files if plan.cgroup else ())]
        if plan.overlay:
            os.chdir(plan.linkdir)  # the overlay options name the layers relative to it
            try:
                libc.mount("overlay", plan.merged, "overlay", 0, plan.overlay)
            except OSError as e:
                raise OSError(e.errno, f"{OVERLAY_FAILED}: {os.strerror(e.errno)}") from None
        else:
            libc.mount(plan.merged, plan.merged, None, libc.MS_BIND | libc.MS_REC)
        root = _Root(plan, status_fd)
        libc.mount("proc", root.target("/proc", is_dir=True, keep=True), "proc",
                   libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV)
        _setup_dev(root, plan.rootless, plan.shm_size)
        if plan.insecure and not plan.rootless:
            _host_devices(root)
        _setup_sys(root, writable=plan.insecure, cgroup=plan.cgroup)
        if not plan.insecure:  # privileged, as runc's: nothing masked or made read-only
            _mask(root.path)
        for target, host_file in plan.files:
            _bind(host_file, root.target(target, is_dir=False), readonly=True,
                  extra=libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        for mount in sorted(plan.mounts, key=lambda m: len(Path(m.target).parts)):
            _user_mount(root, mount)
        # pivot_root(".", "."): the old root ends stacked on the new one; detach it.
        os.chdir(root.path)
        libc.pivot_root(".", ".")
        libc.umount(".", libc.MNT_DETACH)
        os.chdir("/")
        libc.sethostname(plan.hostname)
        if plan.network == "none":
            _loopback_up()
        uid, gid, groups, home = lookup_user(Path("/"), plan.user)
        if plan.rootless and not (is_mapped("uid", [uid]) and is_mapped("gid", [gid, *groups])):
            raise PermissionError(1, f"user {plan.user!r} (uid {uid}, gid {gid}) is not mapped "
                                     "in the rootless user namespace, which maps only the "
                                     "building user to root and the subordinate ids it has; "
                                     + UNMAPPED_HINT)
        os.makedirs(plan.cwd, mode=0o755, exist_ok=True)
        os.chdir(plan.cwd)
        env = dict(plan.env)
        if not env.get("HOME"):  # as runc: an empty HOME (`ENV HOME=`) counts as unset
            env["HOME"] = home
        keep = set(range(plan.last_cap + 1)) if plan.insecure else set(DEFAULT_CAPABILITIES.values())
        for cap in range(plan.last_cap + 1):
            if cap not in keep:
                libc.prctl(libc.PR_CAPBSET_DROP, cap)
        _set_ulimits(plan.ulimits)  # still privileged: a hard limit may go up
        if not plan.insecure:  # insecure is seccomp=unconfined in BuildKit too
            # Now, while still root here: without no_new_privs (setuid programs must work)
            # installing a filter needs CAP_SYS_ADMIN.
            seccomp.install()
        with open("/proc/self/setgroups") as f:
            may_setgroups = f.read().strip() != "deny"
        if may_setgroups:
            # As BuildKit (ensureAdditionalGids): the primary gid leads the supplementary list.
            os.setgroups([gid, *(g for g in groups if g != gid)])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # to non-root: the kernel clears permitted and effective
        if uid == 0 and not plan.insecure:  # insecure: root keeps whatever the builder has
            mask = sum(1 << c for c in keep)
            libc.capset(mask, mask, 0)
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
        path = _find_executable(plan.argv[0], env)
        for fd in cgroup_fds:
            os.write(fd, b"0")  # 0: the writing process itself
        try:
            os.execve(path, list(plan.argv), env)
        except OSError as e:
            raise OSError(e.errno, f'exec: "{path}": {e.strerror}') from None
    except BaseException as e:  # noqa: BLE001 - reported to the builder, which raises it
        message = _describe(e)
        if plan.rootless and isinstance(e, PermissionError):
            message += (" (in a user namespace, files of the image must belong to ids mapped "
                        "into it: unpack the layers as the building user)")
        try:
            _send(status_fd, "E", message)
        finally:
            os._exit(127)
