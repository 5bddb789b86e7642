"""The no-change rebuild without building: a build's result remembered by its inputs.

A rebuild in which every step is a cache hit does no work but still pays for the whole
machinery: importing the parser, the solver and the image code, parsing the Dockerfile,
checksumming the context through the stat cache, keying every step. This module lets the
command line skip all of it when nothing can have changed since the last build of the
same command, and replay what that build would show now (its progress events with every
step a cache hit, summary, metadata file, image ID file): the same output and image as a
fully cached build, in the time it takes to start Python and stat the context.

What "nothing can have changed" means, checked before anything is trusted:

* the same arguments (a small allow-list of `pybuild build` options; anything else -- an
  output, --push, --pull, --no-cache, secrets, --explain, cache import/export, stdin -- is
  never replayed; a --no-cache build is remembered for the same command without it), the
  same working directory, user, pybuild code (every file of the
  package, by size and mtime) and environment that the build reads (SOURCE_DATE_EPOCH,
  PYBUILD_*, the variables named by `--build-arg NAME`): together they name the memo;
* the same context: every entry under the context folder (except top-level entries that
  a .dockerignore without exceptions excludes by plain name) by path, type and mode, size,
  inode, mtime, ctime and owner, and the same Dockerfile (the memo keeps each folder's
  names, which a folder whose own stat did not change still has: the walk stats them
  without reading the folder). A memo is only written when no
  entry changed (ctime) in the two seconds before the build read the context, so a change
  made in the same clock tick cannot hide behind an equal timestamp (git's "racily clean");
* the same store: every file the build relied on -- the cache records of its steps, their
  snapshots and blobs, the base images' names and manifests, the image's manifest, config
  and layers, the tags it wrote -- still there, unchanged (inode, size, mtime). A prune, a
  repair, a re-tag or a pull in between sends the build down the normal path.

A replay counts a cache hit for each step, as the normal path does. The memo is written by
the normal path (``Recorder``) after a build that succeeded: the steps it ran are cache
hits for the next identical build (their records, snapshots and blobs are watched like the
rest), their output is not shown again, and the metadata file marks every step cached.
"""
from __future__ import annotations

import marshal
import os
import sys
import time
from itertools import compress, starmap
from operator import attrgetter
from stat import S_ISDIR
from struct import Struct

try:  # blake2b is built into CPython; hashlib would load OpenSSL first, 2 ms of a replay
    from _blake2 import blake2b as _hash
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import sha256 as _hash
_DIGEST_SIZE = _hash().digest_size

from .cache.paths import count_hit, default_root_dir
from .cli import _COMMANDS, _GROUP_OPTIONS

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: a replay never needs it
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Recorder", "clear_pending", "pending", "prepare", "replay", "write_text"]

MEMO_VERSION = 5  # 5: the folders' listing kept (older memos never match)
RACY_NS = 2_000_000_000  # entries touched this close to the read are not trusted by stat

# `pybuild build` options a replay understands; any other option means "build normally".
_VALUE_OPTIONS = {
    "-f": "file", "--file": "file", "-t": "tag", "--tag": "tag", "--build-arg": "build-arg",
    "--target": "target", "--label": "label", "--progress": "progress", "--root": "root",
    "--metadata-file": "metadata-file", "--iidfile": "iidfile", "--network": "network",
    "--platform": "platform", "--compression": "compression",
    "--compression-level": "compression-level", "--source-date-epoch": "source-date-epoch",
    "--insecure-registry": "insecure-registry", "--memory": "memory", "--cpus": "cpus",
    "--jobs": "jobs", "--build-context": "build-context", "--add-host": "add-host",
    "--shm-size": "shm-size", "--ulimit": "ulimit", "--annotation": "annotation",
    "--provenance": "provenance", "--sbom": "sbom",
}
# Only these values of theirs (parse_go.GO_FALSE, or empty; not imported: a replay must
# start fast): any other asks for an attestation, which a replay does not make.
_OFF = frozenset({"", "0", "f", "F", "FALSE", "false", "False"})
_OFF_VALUES = {"provenance": _OFF, "sbom": _OFF}
# --load changes nothing for a build without an output (the only kind replayed)
_FLAG_OPTIONS = {"-q": "quiet", "--quiet": "quiet", "--load": "load"}

_PENDING: dict[str, Any] | None = None


def _parse(argv: list[str]) -> dict[str, Any] | None:
    """The build options of ``argv`` when it is a `pybuild [build] ...` that a replay
    may answer, else None."""
    args = list(argv)
    if not args:
        return None  # `pybuild` alone is a usage message, not a build
    if args[0] == "build":
        args = args[1:]
    elif args[0] in _COMMANDS or args[0] in _GROUP_OPTIONS:
        return None  # another command, or an option of pybuild itself (--debug among them)
    opts: dict[str, list[str]] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if name in _FLAG_OPTIONS and not eq:
                opts.setdefault(_FLAG_OPTIONS[name], []).append("1")
            elif name in _VALUE_OPTIONS:
                if not eq:
                    i += 1
                    if i >= len(args):
                        return None
                    value = args[i]
                if name == "--build-context" and \
                        not value.partition("=")[2].startswith(("oci-layout://", "docker-image://")):
                    return None  # a folder (or a URL) is read whole by each build
                if value not in _OFF_VALUES.get(_VALUE_OPTIONS[name], (value,)):
                    return None
                opts.setdefault(_VALUE_OPTIONS[name], []).append(value)
            else:
                return None  # an option a replay cannot honour (or a usage error)
        else:
            positional.append(arg)
        i += 1
    if len(positional) > 1 or positional == ["-"] or opts.get("file") == ["-"]:
        return None
    if any(len(opts.get(name, ())) > 1 for name in ("file", "root", "progress", "metadata-file", "iidfile")):
        return None
    context = positional[0] if positional else "."
    return {"context": context, "opts": opts}


def _without_no_cache(argv: list[str]) -> list[str] | None:
    """``argv`` without its ``--no-cache`` flags, or None when it has none (a value such as
    ``--label --no-cache`` is no flag)."""
    out: list[str] = []
    found = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS and i + 1 < len(argv):
            out += argv[i:i + 2]
            i += 2
            continue
        if arg == "--no-cache":
            found = True
        else:
            out.append(arg)
        i += 1
    return out if found else None


def _one(opts: dict[str, list[str]], name: str) -> str | None:
    values = opts.get(name)
    return values[0] if values else None


def _store_root(opts: dict[str, list[str]]) -> str:
    return os.path.abspath(_one(opts, "root") or default_root_dir())


def _dockerfile_path(context: str, opts: dict[str, list[str]]) -> str:
    """Where the normal path reads the Dockerfile from (``build._read_dockerfile``)."""
    given = _one(opts, "file")
    if given:
        if os.path.isabs(given) or os.path.exists(given):
            return os.path.abspath(given)
        return os.path.join(context, given)
    path = os.path.join(context, "Dockerfile")
    if not os.path.exists(path) and os.path.exists(os.path.join(context, "dockerfile")):
        return os.path.join(context, "dockerfile")
    return path


Listing = dict[str, tuple[bytes, str]]  # folder -> (its own stat packed, its names NUL-joined)


def _tree_stamp(top: str, skip: frozenset[str] = frozenset(), *, meta: bool = True,
                given: Listing | None = None) -> tuple[str, int]:
    """``_tree_walk`` without the listing."""
    digest, newest, _ = _tree_walk(top, skip, meta=meta, given=given)
    return digest, newest


def _tree_walk(top: str, skip: frozenset[str] = frozenset(), *, meta: bool = True,
               given: Listing | None = None) -> tuple[str, int, Listing]:
    """A digest of every entry below ``top`` (lstat: type, mode, size, inode, mtime, ctime,
    owner; with ``meta`` False only name, size and mtime, and no __pycache__ folder) and
    the newest ctime seen, and (with ``meta``) the listing: each folder below the top, its
    own stat packed and its names in the order the walk took them.

    ``given`` (a listing kept in the memo) spares the walk most of its reading: a folder
    below the top whose own stat is the one recorded there has the names recorded there,
    since creating, removing or renaming an entry changes its folder's mtime and ctime (and a memo is only written after a walk that saw nothing change in
    the two seconds before it, so a later change has a later time). Any other folder is
    listed. The names are digested too: a recorded listing that no longer holds can only
    make the stamp differ. Either way the digest is that of the tree as it is now; the
    recorded names only save the reading (13% of the walk).

    Entries are taken in the order the folders list them, folder by folder breadth first:
    an unchanged tree is listed in the same order, and a different order only costs a real
    build. This walk is most of a replay's time on a big context, so it stats each name
    relative to its open folder and packs each folder's numbers in C loops; and once it
    has seen ``SPLIT_AT`` entries, or ``SPLIT_FOLDERS`` folders wait, a second process
    (fork) walks every other folder still to walk, each process on a core of its own. The
    split falls at the same place for the same tree, and the digest says whether and where
    it fell."""
    part = _Part(meta, given)
    # the top folder is always listed: names a .dockerignore excludes may come and go
    # there (changing its stat) without changing the stamp
    queue: list[tuple[str, bytes | None]] = [(top, None)]
    done = 0
    while done < len(queue):
        waiting = len(queue) - done
        if (part.count >= SPLIT_AT or waiting >= SPLIT_FOLDERS) and waiting >= 2 and _may_fork():
            rest = queue[done:]
            digests = _walk_split(rest[0::2], rest[1::2], meta, given)
            part.names.append(f"split {len(rest)}")
            digest = part.digest()
            for d, newest, listed in digests:
                digest.update(d)
                part.newest = max(part.newest, newest)
                part.listing.update(listed)
            return digest.hexdigest(), part.newest, part.listing
        part.folder(queue[done], queue, skip if done == 0 else frozenset())
        done += 1
    return part.digest().hexdigest(), part.newest, part.listing


# A walk hands every other folder still to walk to a second process once it has seen
# SPLIT_AT entries, or as soon as SPLIT_FOLDERS folders wait (a wide tree: the split then
# comes right after the top, and the two processes share all the rest).
SPLIT_AT = 2000
SPLIT_FOLDERS = 64


class _Part:
    """What one process saw of a tree: names, packed numbers, the newest ctime."""

    def __init__(self, meta: bool, given: Listing | None = None) -> None:
        self.meta = meta
        self.given = given or {}
        self.names: list[str] = []
        self.nums: list[bytes] = []
        self.newest = 0
        self.listing: Listing = {}

    @property
    def count(self) -> int:
        return len(self.names)

    def folder(self, item: tuple[str, bytes | None], more: list[tuple[str, bytes | None]],
               skip: frozenset[str]) -> None:
        """Stat every entry of the folder ``item`` (its path, and its own stat packed, when
        known); its folders go onto ``more``.

        Past the stats themselves (most of the time, in the kernel), a folder's numbers
        are picked, packed and its folders found by C loops (map, starmap, compress), not
        a Python statement per entry."""
        path, packed = item
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            self.names.append(f"{path}/error {exc.errno}")
            return
        try:
            recorded = self.given.get(path) if packed is not None else None
            if recorded is not None and recorded[0] == packed:
                listed = recorded[1].split("\0") if recorded[1] else []
            else:
                listed = os.listdir(fd)
                if packed is not None:
                    recorded = (packed, "\0".join(listed))
            if recorded is not None:
                self.listing[path] = recorded
            if skip or not self.meta:
                listed = [name for name in listed
                          if name not in skip and (self.meta or name != "__pycache__")]
            lstat = os.lstat
            try:
                stats = [lstat(name, dir_fd=fd) for name in listed]
            except OSError:  # an entry removed while listed: the slow way, naming it
                self._one_by_one(path, fd, listed, more)
                return
            self.names.append(f"{path}/")
            self.names += listed
            if not stats:
                return
            folders = map(S_ISDIR, map(_MODE, stats))
            if self.meta:
                packs = list(starmap(_PACK_META, map(_META_FIELDS, stats)))
                self.nums.append(b"".join(packs))
                self.newest = max(self.newest, max(map(_CTIME, stats)))
                more += [(f"{path}/{name}", p) for name, p in compress(zip(listed, packs), folders)]
            else:
                self.nums.append(b"".join(starmap(_PACK_PLAIN, map(_PLAIN_FIELDS, stats))))
                more += [(f"{path}/{name}", None) for name in compress(listed, folders)]
        except OSError as exc:
            self.names.append(f"{path}/error {exc.errno}")
        finally:
            os.close(fd)

    def _one_by_one(self, path: str, fd: int, listed: list[str],
                    more: list[tuple[str, bytes | None]]) -> None:
        """``folder`` for a folder whose entries change under the walk: each name that
        cannot be stated is recorded with its error."""
        self.names.append(f"{path}/")
        for name in listed:
            try:
                st = os.lstat(name, dir_fd=fd)
            except OSError as exc:
                self.names.append(f"{name}/error {exc.errno}")
                continue
            self.names.append(name)
            packed: bytes | None = None
            if self.meta:
                packed = _PACK_META(*_META_FIELDS(st))
                self.nums.append(packed)
                self.newest = max(self.newest, st.st_ctime_ns)
            else:
                self.nums.append(_PACK_PLAIN(*_PLAIN_FIELDS(st)))
            if S_ISDIR(st.st_mode):
                more.append((f"{path}/{name}", packed))

    def walk(self, folders: list[tuple[str, bytes | None]]) -> None:
        """Every entry below each of ``folders``, depth first."""
        stack = list(reversed(folders))
        while stack:
            more: list[tuple[str, bytes | None]] = []
            self.folder(stack.pop(), more, frozenset())
            stack.extend(reversed(more))

    def digest(self) -> Any:
        digest = _hash("\0".join(self.names).encode("utf-8", "surrogateescape"))
        for chunk in self.nums:
            digest.update(chunk)
        return digest


# What an entry's stat gives the stamp: type and mode, size, inode, mtime, ctime, owner
# (no atime: a build reading the files must not change their stamp); without meta, size
# and mtime. Packed as unsigned where the kernel's type is (an inode may exceed 2**63).
_META_FIELDS = attrgetter("st_mode", "st_size", "st_ino", "st_mtime_ns", "st_ctime_ns", "st_uid", "st_gid")
_PACK_META = Struct("=IQQqqII").pack
_PLAIN_FIELDS = attrgetter("st_size", "st_mtime_ns")
_PACK_PLAIN = Struct("=Qq").pack
_CTIME = attrgetter("st_ctime_ns")
_MODE = attrgetter("st_mode")


def _may_fork() -> bool:
    """A second process helps only with a second core, and is safe only before threads."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return False


def _walked(folders: list[tuple[str, bytes | None]], meta: bool,
            given: Listing | None = None) -> tuple[bytes, int, Listing]:
    """(digest, newest ctime, listing) of the trees below ``folders``."""
    part = _Part(meta, given)
    part.walk(folders)
    return part.digest().digest(), part.newest, part.listing


def _walk_split(mine: list[tuple[str, bytes | None]], theirs: list[tuple[str, bytes | None]],
                meta: bool, given: Listing | None) -> list[tuple[bytes, int, Listing]]:
    """``_walked`` of ``mine`` and of ``theirs``, the second by a forked child. Should the
    child fail, this process walks it too.

    The child answers with its digest, newest ctime and listing, the folders it took from
    ``given`` named only (None): on a replay that is all of them, and the answer stays a
    few kilobytes."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the child: walk, answer, and leave without any clean-up
        try:
            digest, newest, listed = _walked(theirs, meta, given)
            kept = given or {}
            news = marshal.dumps({path: None if entry is kept.get(path) else entry
                                  for path, entry in listed.items()})
            with os.fdopen(write_end, "wb") as out:
                out.write(digest + newest.to_bytes(8, "big", signed=True)
                          + len(news).to_bytes(8, "big") + news)
        finally:
            os._exit(0)
    os.close(write_end)
    answer = b""
    head = _DIGEST_SIZE + 16
    want = head
    try:
        mine_walked = _walked(mine, meta, given)
        # the answer's bytes, not the pipe's end: that comes only once the child has
        # unmapped its memory, a millisecond after it answered
        while pid > 0 and len(answer) < want and (chunk := os.read(read_end, want - len(answer))):
            answer += chunk
            if len(answer) >= head:
                want = head + int.from_bytes(answer[head - 8:head], "big")
    finally:
        os.close(read_end)
        if pid > 0:
            _reap(pid, wait=len(answer) != want)
    if len(answer) != want:
        return [mine_walked, _walked(theirs, meta, given)]
    kept = given or {}
    listed = {path: kept[path] if entry is None else entry
              for path, entry in marshal.loads(answer[head:]).items()}
    return [mine_walked, (answer[:_DIGEST_SIZE],
                          int.from_bytes(answer[_DIGEST_SIZE:_DIGEST_SIZE + 8], "big", signed=True),
                          listed)]


_UNREAPED: list[int] = []  # walk children that had answered but not yet ended


def _reap(pid: int, *, wait: bool) -> None:
    """Collect the walk's child; one that answered and is still ending is collected by the
    next call (or, as a replay ends the process at once, by init)."""
    for other in _UNREAPED[:]:
        try:
            if os.waitpid(other, os.WNOHANG)[0]:
                _UNREAPED.remove(other)
        except ChildProcessError:
            _UNREAPED.remove(other)
    if wait:
        os.waitpid(pid, 0)
    elif not os.waitpid(pid, os.WNOHANG)[0]:
        _UNREAPED.append(pid)


def _ignored_top_level(context: str, dockerfile: str) -> frozenset[str]:
    """Top-level names a .dockerignore excludes outright, when that is certain: plain names
    (no wildcard, no folder) in a file without `!` exceptions, and no Dockerfile-specific
    ignore file taking its place. These are never read by a build, so not stamped."""
    if os.path.exists(dockerfile + ".dockerignore"):
        return frozenset()
    if os.path.islink(os.path.join(context, ".dockerignore")):
        return frozenset()  # the build reads it inside the context: not worth following here
    try:
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f]
    except OSError:
        return frozenset()
    names = set()
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            return frozenset()
        name = line
        while name.startswith("./") or name.startswith("/"):
            name = name[2:] if name.startswith("./") else name[1:]
        name = name.rstrip("/")
        if name and not any(c in name for c in "*?[\\/") and name not in (".", ".."):
            names.add(name)
    # what tells the build what to read is always stamped, even where it excludes itself
    names -= {".dockerignore", os.path.basename(dockerfile), os.path.basename(dockerfile) + ".dockerignore"}
    return frozenset(names)


def _code_stamp() -> str:
    """pybuild's own files by size and mtime: another version never replays an old memo."""
    package = os.path.dirname(os.path.abspath(__file__))
    parts = [_tree_stamp(package, meta=False)[0]]
    grammar = os.path.join(os.path.dirname(package), "grammar")  # an editable install's
    if os.path.isdir(grammar):
        parts.append(_tree_stamp(grammar, meta=False)[0])
    return ":".join(parts)


def _signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if S_ISDIR(st.st_mode):
        return [st.st_ino, -1, 0]
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def prepare(argv: list[str]) -> dict[str, Any] | None:
    """The memo this command would use, its inputs stamped now (before any file is read
    by a build), or None when the command is not one a replay can answer."""
    global _PENDING
    _PENDING = None
    command = _command(argv)
    return None if command is None else _stamp(command, None)


def _command(argv: list[str]) -> dict[str, Any] | None:
    """What names the memo of ``argv`` (its key, store, context, Dockerfile), or None."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    opts = parsed["opts"]
    context = os.path.realpath(parsed["context"])
    if not os.path.isdir(context):
        return None
    env_names = sorted({k for k in os.environ if k.startswith("PYBUILD_")} | {"SOURCE_DATE_EPOCH"}
                       | {a for a in opts.get("build-arg", ()) if "=" not in a})
    inputs = {"v": MEMO_VERSION, "argv": list(argv), "cwd": os.getcwd(), "uid": os.geteuid(),
              "env": {k: os.environ.get(k) for k in env_names}, "code": _code_stamp(),
              "python": sys.version}
    # repr, not json (which loads re): the same for the same inputs, as env's names are sorted
    key = _hash(repr(sorted(inputs.items())).encode("utf-8", "surrogateescape")).hexdigest()
    return {"opts": opts, "context": context, "dockerfile": _dockerfile_path(context, opts),
            "key": key, "root": _store_root(opts)}


def _stamp(command: dict[str, Any], given: Listing | None) -> dict[str, Any]:
    """Stamp the context and Dockerfile of ``command`` now: the token ``pending`` gives."""
    global _PENDING
    opts, context, dockerfile = command["opts"], command["context"], command["dockerfile"]
    skip = _ignored_top_level(context, dockerfile)
    started_ns = time.time_ns()
    ctx_stamp, newest, folders = _tree_walk(context, skip, given=given)
    try:
        st = os.stat(dockerfile)
        df_sig: list[int] | None = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        df_newest = st.st_ctime_ns
    except OSError:
        df_sig, df_newest = None, started_ns
    _PENDING = {
        "key": command["key"], "root": command["root"], "context": context, "stamp": ctx_stamp,
        "listing": folders,
        "dockerfile": [dockerfile, df_sig, _signature(dockerfile + ".dockerignore")],
        "racy": max(newest, df_newest) >= started_ns - RACY_NS,
        "quiet": bool(opts.get("quiet")), "metadata_file": _one(opts, "metadata-file"),
        "iidfile": _one(opts, "iidfile"),
        "progress": "quiet" if opts.get("quiet") else (_one(opts, "progress") or "auto"),
    }
    return _PENDING


def pending() -> dict[str, Any] | None:
    """What ``prepare`` stamped for the command being run (None outside the command line)."""
    return _PENDING


def clear_pending() -> None:
    global _PENDING
    _PENDING = None


def _memo_path(root: str, key: str) -> str:
    return os.path.join(root, "warm", f"{key}.memo")


# A memo file: this tag, the digest of the rest, then the memo in marshal's format (a
# replay reads it without loading json, and so re). The digest is checked before marshal
# reads a byte: a torn or foreign file is never unpacked, only ignored.
_MEMO_TAG = b"pybuild-memo\n"


def _pack_memo(memo: dict[str, Any]) -> bytes:
    payload = marshal.dumps(memo)
    return _MEMO_TAG + _hash(payload).digest() + payload


def _unpack_memo(data: bytes) -> Any:
    """The memo ``data`` holds, or None."""
    if not data.startswith(_MEMO_TAG):
        return None
    body = data[len(_MEMO_TAG):]
    digest, payload = body[:_DIGEST_SIZE], body[_DIGEST_SIZE:]
    if _hash(payload).digest() != digest:
        return None
    try:
        return marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None


def replay(argv: list[str], started: float) -> int | None:
    """Answer ``argv`` from its memo when nothing it depends on changed: prints what the
    build printed and returns 0. None: build normally (``pending()`` then holds the stamp
    the normal path records)."""
    plain = _without_no_cache(argv)
    if plain is not None:
        # Never answered from a memo; but such a build writes every step's record, all of
        # which the same command without --no-cache then hits: it is remembered for that.
        prepare(plain)
        return None
    global _PENDING
    _PENDING = None
    command = _command(argv)
    if command is None:
        return None
    try:
        with open(_memo_path(command["root"], command["key"]), "rb") as f:
            memo = _unpack_memo(f.read())
    except OSError:
        memo = None
    if not isinstance(memo, dict) or memo.get("v") != MEMO_VERSION:
        memo = None
    # the memo's listing spares the walk reading the folders that did not change; the
    # stamp is that of the context as it is now either way (and the token of a build)
    token = _stamp(command, memo.get("listing") if memo else None)
    if memo is None:
        return None
    if memo.get("stamp") != token["stamp"] or memo.get("dockerfile") != token["dockerfile"]:
        return None
    for path, sig in memo.get("watch", ()):
        if _signature(path) != sig:
            return None
    _show(memo, token, started)
    return 0


def _show(memo: dict[str, Any], token: dict[str, Any], started: float) -> None:
    from .progress import Progress

    for key in memo["steps"]:
        count_hit(token["root"], key)  # as the normal path counts a hit
    progress = Progress(token["progress"])
    ids: dict[int, int] = {}
    for kind, arg in memo["events"]:
        if kind == "start":
            ids[len(ids) + 1] = progress.start(arg)
        elif kind == "cached":
            progress.cached(ids[arg])
        elif kind == "internal_done":
            progress.internal_done(ids[arg])
        elif kind == "warn":
            progress.warn(arg)
        elif kind == "check":
            from .checks import Finding

            progress.check(Finding.from_json(arg))
        elif kind == "info":
            progress.info(arg)
    progress.debug = bool(os.environ.get("PYBUILD_DEBUG"))
    progress.finish()  # with the build checks' summary, as the build ended
    if token["iidfile"]:
        write_text(token["iidfile"], memo["image_id"])
    if token["metadata_file"]:
        write_text(token["metadata_file"], memo["metadata"])
    if token["quiet"]:
        sys.stdout.write(memo["image_id"] + "\n")
    else:
        n = len(memo["steps"])
        sys.stderr.write(f"built {memo['shown']} {memo['image_id']} in "
                         f"{time.monotonic() - started:.1f}s ({n}/{n} steps cached)\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a user's output file (metadata, image ID) aside, then rename it into place."""
    _write_file(path, text.encode("utf-8"))


def _write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """``data`` written aside, then renamed into place: whole or absent."""
    path = os.fspath(path)
    part = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.part")
    with open(part, "wb") as f:
        f.write(data)
    os.replace(part, path)


class Recorder:
    """Collects, during a normal build, what a memo needs; ``commit`` writes it when the
    build qualifies (it succeeded, nothing was pulled, the context was not racily touched)."""

    def __init__(self, token: dict[str, Any]) -> None:
        self.token = token
        self.events: list[list[Any]] = []
        self.watch: list[str] = []

    def event(self, kind: str, arg: Any) -> None:
        self.events.append([kind, arg])

    def commit(self, *, steps: list[str], image_id: str, shown: str, metadata: dict[str, Any]) -> None:
        import json  # the normal path has it loaded; a replay never needs it

        token = self.token
        if token["racy"]:
            return
        # As the next identical build shows it: the steps that ran are cache hits then,
        # and their output is not shown again.
        events = []
        for kind, arg in self.events:
            if kind == "done":
                events.append(["cached", arg])
            elif kind in ("start", "cached", "internal_done", "warn", "check", "info"):
                events.append([kind, arg])
            elif kind != "output":
                return  # an error: nothing to remember
        watch = []
        for path in dict.fromkeys(self.watch):
            sig = _signature(path)
            if sig is None:
                return
            watch.append([path, sig])
        memo = {"v": MEMO_VERSION, "stamp": token["stamp"], "dockerfile": token["dockerfile"],
                "listing": token["listing"],
                "watch": watch, "events": events, "steps": steps, "image_id": image_id,
                "shown": shown, "metadata": json.dumps(metadata, indent=2) + "\n"}
        path = _memo_path(token["root"], token["key"])
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_file(path, _pack_memo(memo))
        except OSError:
            pass  # a memo is an optimisation: without it the next build takes the normal path
