"""Rootless pybuild: the whole process in a user namespace of its own, as ``buildah unshare``.

Owns: ``in_user_namespace`` (the one question every "rootless?" decision asks: overlay's
``userxattr``, ``user.overlay.*`` opaque xattrs, whether ids can be given away),
``enter_user_namespace`` (called once, before any thread starts, by a build or ``pybuild run``
started without root: the calling user becomes root of a new user namespace, with the
user's /etc/subuid and /etc/subgid ranges mapped behind it through newuidmap/newgidmap where
present, and a new mount namespace whose mounts never reach the host), the subordinate-id
lookup, and ``check_mapped``/``chown``, which turn an id the namespace cannot hold into an
error naming the id and what to do.

In the namespace the building user's files look owned by 0 and everything pybuild creates
stays owned by that user on disk; an id of the subordinate range lands on disk as the
corresponding subordinate id, exactly as buildah's and podman's rootless stores do.
"""
from __future__ import annotations

import errno
import os
import pwd
import threading
from pathlib import Path

from builder.errors import ExecError

from . import libc

__all__ = [
    "UNMAPPED_HINT",
    "check_mapped",
    "chown",
    "enter_user_namespace",
    "in_user_namespace",
    "is_mapped",
    "mapped_ranges",
    "subids",
    "write_id_maps",
]

# The identity map of the initial user namespace: every id is itself.
_INITIAL_MAP = ["0", "0", "4294967295"]

UNMAPPED_HINT = ("give the building user subordinate ids in /etc/subuid and /etc/subgid "
                 "(e.g. 'USER:100000:65536', with newuidmap/newgidmap from the uidmap package "
                 "installed), or build as root")


def in_user_namespace() -> bool:
    """True when this process runs in a user namespace other than the initial one, i.e.
    when being uid 0 does not make it the host's root."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != _INITIAL_MAP
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def subids(path: str, name: str, uid: int) -> tuple[int, int] | None:
    """The first (start, count) range of ``name`` (or its uid) in /etc/subuid or /etc/subgid."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (name, str(uid)) and fields[1].isdigit() \
                and fields[2].isdigit() and int(fields[2]) > 0:
            return int(fields[1]), int(fields[2])
    return None


def write_id_maps(pid: int) -> None:
    """Map the building user to root in ``pid``'s new user namespace, plus its subordinate
    ranges through the set-uid newuidmap/newgidmap when /etc/subuid and /etc/subgid give
    it some (else the one mapping an unprivileged process may write itself). Run from
    outside that namespace: inside, the set-uid bit of newuidmap means nothing."""
    uid, gid = os.getuid(), os.getgid()
    name = _user_name(uid)
    sub_u, sub_g = subids("/etc/subuid", name, uid), subids("/etc/subgid", name, uid)
    import shutil

    if sub_u and sub_g and shutil.which("newuidmap") and shutil.which("newgidmap"):
        import subprocess  # only rootless builds with subordinate ids run these

        for tool, own, (start, count) in (("newuidmap", uid, sub_u), ("newgidmap", gid, sub_g)):
            done = subprocess.run([tool, str(pid), "0", str(own), "1", "1", str(start), str(count)],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                raise ExecError(f"{tool} failed: {done.stderr.strip() or done.returncode}",
                                hint=f"check the ranges of {name} in /etc/subuid and /etc/subgid")
        return
    try:
        Path(f"/proc/{pid}/uid_map").write_text(f"0 {uid} 1\n")
        # setgroups must be denied before an unprivileged process may write gid_map.
        Path(f"/proc/{pid}/setgroups").write_text("deny\n")
        Path(f"/proc/{pid}/gid_map").write_text(f"0 {gid} 1\n")
    except OSError as e:
        raise ExecError(f"cannot map user {name} into a user namespace: {e.strerror}") from e


def _fork_mapper() -> tuple[int, int, int]:
    """A child, forked while we are still outside the new namespace, that maps our ids
    once told to (a byte on the first pipe) and writes any error to the second."""
    target = os.getpid()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(go_w)
            os.close(err_r)
            if os.read(go_r, 1) == b"G":
                write_id_maps(target)
                code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent as text
            text = e.message if isinstance(e, ExecError) else str(e)
            os.write(err_w, text.encode("utf-8", "replace"))
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(err_w)
    return pid, go_w, err_r


def _finish_mapper(pid: int, go_w: int, err_r: int, *, go: bool) -> str | None:
    """Let the mapper run (or end it unused); the error it reported, if any."""
    try:
        if go:
            os.write(go_w, b"G")
    finally:
        os.close(go_w)
    with os.fdopen(err_r, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if go and (message or os.waitstatus_to_exitcode(status) != 0):
        return message or "the id-mapping helper failed"
    return None


def enter_user_namespace() -> None:
    """Make this (unprivileged, single-threaded) process root of a new user namespace with
    a new, private mount namespace. Raises ExecError saying why when the kernel refuses."""
    if threading.active_count() > 1:
        raise ExecError("enter_user_namespace() must be called before threads start")
    name = _user_name(os.getuid())
    mapper = _fork_mapper()
    try:
        libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWNS)
    except OSError as e:
        _finish_mapper(*mapper, go=False)
        raise ExecError(f"cannot create a user namespace for rootless building: {e.strerror}",
                        hint="allow unprivileged user namespaces (sysctl "
                             "user.max_user_namespaces, kernel.unprivileged_userns_clone, "
                             "kernel.apparmor_restrict_unprivileged_userns) or build as root") from e
    failed = _finish_mapper(*mapper, go=True)
    if failed:
        raise ExecError(f"cannot map user {name} into the rootless user namespace: {failed}",
                        hint=f"check the ranges of {name} in /etc/subuid and /etc/subgid")
    try:
        # Before any other mount: nothing pybuild mounts may propagate to the host.
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    except OSError as e:
        raise ExecError(f"cannot make the rootless mount namespace private: {e.strerror}") from e


def mapped_ranges(kind: str) -> list[tuple[int, int]]:
    """The [start, end) ranges of ids (``kind``: "uid" or "gid") this process' user
    namespace maps."""
    try:
        with open(f"/proc/self/{kind}_map") as f:
            rows = [line.split() for line in f]
    except OSError:
        return [(0, 1 << 32)]
    return [(int(inside), int(inside) + int(count)) for inside, _outside, count in rows]


def is_mapped(kind: str, ids: list[int] | tuple[int, ...]) -> bool:
    """Whether every id of ``ids`` exists in this process' user namespace (``kind``: "uid"
    or "gid")."""
    ranges = mapped_ranges(kind)
    return all(any(lo <= i < hi for lo, hi in ranges) for i in ids)


def _shown(kind: str) -> str:
    return ", ".join(f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in mapped_ranges(kind))


def check_mapped(uid: int, gid: int, what: str) -> None:
    """Raise ExecError when ``uid``/``gid`` cannot exist in this user namespace; ``what``
    names who needs them ("COPY --chown", "the cache mount on /x")."""
    for kind, value in (("uid", uid), ("gid", gid)):
        if value >= 0 and not is_mapped(kind, [value]):
            raise ExecError(f"{what} needs {kind} {value}, which the rootless user namespace "
                            f"does not map (it has {kind}s {_shown(kind)})", hint=UNMAPPED_HINT)


def chown(path: str | os.PathLike[str], uid: int, gid: int, what: str) -> None:
    """lchown that names the unmapped id (EINVAL from the kernel says nothing) in a user
    namespace."""
    try:
        os.lchown(path, uid, gid)
    except OSError as e:
        if e.errno == errno.EINVAL and in_user_namespace():
            check_mapped(uid, gid, what)
        raise
