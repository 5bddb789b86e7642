"""USER resolution: a Dockerfile ``USER`` value to uid, gid and supplementary gids.

Follows runc/BuildKit: ``name`` or ``uid`` with an optional ``:group`` or ``:gid``, looked
up in the image's /etc/passwd and /etc/group. Without an explicit group the primary gid is
the passwd entry's and the supplementary gids are the groups listing the user as a member;
a numeric uid missing from passwd runs with gid 0; an unknown name is an error. With both
parts given, ``root`` stands for 0 without any file, as in BuildKit's ``ParseUIDGID``.
"""
from __future__ import annotations

from pathlib import Path

from builder.errors import ExecError

from .rootfs import secure_join

__all__ = ["resolve_user", "lookup_user"]

_MAX_ID = 2**31 - 1


def _entries(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise ExecError(f"unable to read {path.name} of the image: {e.strerror}") from e
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _number(text: str) -> int | None:
    if text.isdigit() and text.isascii():
        value = int(text)
        if value > _MAX_ID:
            raise ExecError(f"user or group id out of range: {text}")
        return value
    return None


def resolve_user(rootfs: Path, spec: str) -> tuple[int, int, tuple[int, ...]]:
    """Resolve ``spec`` against the image mounted at ``rootfs``: ``(uid, gid, groups)``."""
    uid, gid, groups, _home = lookup_user(rootfs, spec)
    return uid, gid, groups


def lookup_user(rootfs: Path, spec: str) -> tuple[int, int, tuple[int, ...], str]:
    """Like ``resolve_user`` plus the home directory ("/" when passwd has none)."""
    user_arg, sep, group_arg = spec.partition(":")
    if sep and all(part == "root" or _number(part) is not None for part in (user_arg, group_arg)):
        # BuildKit's fast path (ParseUIDGID): "root" is 0 when both ids are given, with no
        # passwd or group file needed (an image without /etc/passwd takes USER root:root).
        user_arg, group_arg = ("0" if part == "root" else part for part in (user_arg, group_arg))
    uid_num = _number(user_arg)
    gid_num = _number(group_arg)

    passwd = [row for row in _entries(secure_join(rootfs, "/etc/passwd")) if len(row) >= 4]
    uid, gid, name, home = 0, 0, "", "/"
    for row in passwd:
        try:
            row_uid, row_gid = int(row[2]), int(row[3])
        except ValueError:
            continue
        if (user_arg == "" and row_uid == 0) or (uid_num is not None and row_uid == uid_num) \
                or (uid_num is None and user_arg != "" and row[0] == user_arg):
            uid, gid, name = row_uid, row_gid, row[0]
            home = row[5] if len(row) > 5 and row[5] else "/"
            break
    else:
        if user_arg and uid_num is None:
            raise ExecError(f"unable to find user {user_arg}: no matching entries in passwd file")
        if uid_num is not None:
            uid = uid_num

    groups: tuple[int, ...] = ()
    if name or group_arg:
        group_rows = []
        for row in _entries(secure_join(rootfs, "/etc/group")):
            if len(row) >= 3:
                try:
                    group_rows.append((row[0], int(row[2]), row[3].split(",") if len(row) > 3
                                       else []))
                except ValueError:
                    continue
        if group_arg:
            for gname, row_gid, _members in group_rows:
                if (gid_num is not None and row_gid == gid_num) or \
                        (gid_num is None and gname == group_arg):
                    gid = row_gid
                    break
            else:
                if gid_num is None:
                    raise ExecError(
                        f"unable to find group {group_arg}: no matching entries in group file")
                gid = gid_num
        else:
            groups = tuple(row_gid for _g, row_gid, members in group_rows if name in members)
    return uid, gid, groups, home
