"""Source trees for COPY/ADD: the build context and other stages' root filesystems.

This module owns how a COPY source path is *selected* (cleaning, wildcards, symlinks,
.dockerignore), how a selected tree is *walked*, and the *content checksum* of exactly
what a step selects. Copying the selection onto a root filesystem is ``builder.copy``.

Selection (as BuildKit's fileop with ``FollowSymlinks``/``AllowWildcard``):

* a source is cleaned against ``/``: ``../x``, ``/x`` and ``x`` are the same path;
* symlinks resolve inside the tree, whose root acts as ``/`` (``..`` stops at the root,
  absolute targets start at the root); the source path itself is followed, links found
  while walking a directory are copied as links;
* wildcards (Go ``filepath.Match`` per component: ``*``, ``?``, ``[...]``, ``\\`` escapes)
  start at the first component holding one; the part before it is resolved first; a
  directory that matches is not searched further; a wildcard matching nothing selects
  nothing (BuildKit's ``AllowEmptyWildcard``, no error);
* in the build context, what .dockerignore excludes does not exist.

Checksum canonical form (``DirTree.checksum``), version ``pybuild-source-checksum/v1``.
sha256 over the UTF-8 bytes of::

    "pybuild-source-checksum/v1\\n"
    for each match, in the order given:
        canonical_json(["match", match.rel, match.is_dir]) + "\\n"
        for each entry the walk yields (pre-order, names sorted by bytes, the match itself
        first with path ""; ignored/excluded entries are absent):
            canonical_json([path, type, mode, size, data, link]) + "\\n"

``path`` is relative to the match ("" for the match), ``type`` one of ``file dir symlink
fifo char block socket``, ``mode`` the permission bits with setuid/setgid/sticky
(``st_mode & 0o7777``; 0 for symlinks), ``size`` the byte size of a file (0 otherwise),
``data`` the file's ``sha256:<hex>`` / the symlink's target / ``"major:minor"`` of a
device / "" otherwise, ``link`` the path of the first entry of this walk sharing the
file's inode when it has several links (a hard link the copy will preserve), else "".
Never included: mtimes, atimes, ctimes, owners (COPY from the context sets 0:0 or the
--chown owner; the caller keys --chown separately), xattrs.

File digests are cached by (path, size, mtime_ns, inode, ctime_ns) in a JSON file, so an
unchanged file is read once; files changed in the last two seconds are not cached (their
mtime could still change within the same tick). The cache is a hint, never a key: its
format may change without changing any checksum.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

from builder.digest import CHUNK, Digest, canonical_json, json_utf8

try:  # what json.dumps(ensure_ascii=False) quotes strings with
    from _json import encode_basestring as _json_str
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    from json.encoder import py_encode_basestring as _json_str
from builder.errors import ContextError

if TYPE_CHECKING:
    from builder.dockerignore import IgnoreMatcher

__all__ = [
    "SourceMatch",
    "TreeEntry",
    "SourceTree",
    "DirTree",
    "BuildContext",
    "StatCache",
    "clean_source",
    "resolve_in_root",
    "has_wildcards",
    "go_match",
]

_MAX_LINKS = 255
CHECKSUM_VERSION = "pybuild-source-checksum/v1"


# ---------------------------------------------------------------- paths


def clean_source(path: str) -> str:
    """A source path cleaned against ``/`` and made relative ("" is the root)."""
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


def resolve_in_root(
    root: str | os.PathLike[str],
    rel: str,
    *,
    follow_final: bool = True,
    visible: Callable[[str, bool], bool] | None = None,
) -> str:
    """Resolve ``rel`` inside ``root`` as if ``root`` were ``/`` (continuity's RootPath).

    Returns the resolved relative path ("" for the root). Missing components are kept
    as written. ``visible(rel, is_dir)`` hides entries (the .dockerignore): a hidden
    symlink is not followed, as it would not exist in the transferred context.
    """
    root_s = os.fspath(root)
    todo = [c for c in rel.split("/") if c]
    todo.reverse()  # a stack: the next component is todo[-1]
    done: list[str] = []
    links = 0
    missing = False
    while todo:
        comp = todo.pop()
        if comp == ".":
            continue
        if comp == "..":
            if done:
                done.pop()
            continue
        if missing or (not todo and not follow_final):
            done.append(comp)
            continue
        cur = os.path.join(root_s, *done, comp)
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            missing = True
            done.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode) and (visible is None or visible("/".join([*done, comp]), False)):
            links += 1
            if links > _MAX_LINKS:
                raise ContextError(f"too many levels of symbolic links: {rel!r}")
            target = os.readlink(cur)
            if target.startswith("/"):
                done = []
            todo.extend(reversed([c for c in target.split("/") if c]))
            continue
        done.append(comp)
    return "/".join(done)


def has_wildcards(path: str) -> bool:
    """Whether a path holds a wildcard not escaped by a backslash (BuildKit's rule)."""
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


_match_cache: dict[str, re.Pattern[str] | None] = {}


def _compile_go_pattern(pattern: str) -> re.Pattern[str] | None:
    """Go's filepath.Match as a regex; None for a malformed pattern (which matches nothing)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 >= n:
                return None
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            if neg:
                i += 1
            items: list[str] = []
            first = True
            while True:
                if i >= n:
                    return None
                if pattern[i] == "]" and not first:
                    break
                first = False
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None or hi < lo:
                        return None
                    items.append(f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    items.append(re.escape(lo))
            out.append(("[^/" if neg else "[") + "".join(items) + "]")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)`` (errors count as no match, as BuildKit does)."""
    try:
        rx = _match_cache[pattern]
    except KeyError:
        rx = _match_cache[pattern] = _compile_go_pattern(pattern)
    return rx is not None and rx.fullmatch(name) is not None


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """One selected source: ``rel`` as matched (its basename names a file copied into a
    directory), ``resolved`` after following symlinks (what is read)."""

    rel: str
    resolved: str
    is_dir: bool


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a walk: ``rel`` relative to the match ("" for the match itself)."""

    rel: str
    path: str
    st: os.stat_result


class SourceTree(Protocol):
    """What COPY reads from: the build context or another stage's root filesystem."""

    root: Path
    label: str
    owner: tuple[int, int] | None  # owner given to copies; None keeps the source's
    sockets_as_files: bool

    def select(self, pattern: str, *, excludes: Sequence[str] = ()) -> list[SourceMatch]: ...

    def visible(self, rel: str, is_dir: bool) -> bool: ...

    def walk(self, match: SourceMatch, *, excludes: Sequence[str] = ()) -> Iterator[TreeEntry]: ...


# ---------------------------------------------------------------- trees


class DirTree:
    """A directory tree read as a COPY source (``--from`` a stage or an image)."""

    def __init__(
        self,
        root: Path,
        *,
        label: str = "source",
        owner: tuple[int, int] | None = None,
        ignore: IgnoreMatcher | None = None,
        sockets_as_files: bool = False,
        snapshots: Sequence[Path] = (),
    ) -> None:
        self.root = Path(root)
        self.label = label
        self.owner = owner
        self.ignore = ignore
        self.sockets_as_files = sockets_as_files
        self._root_s = os.fspath(self.root)
        # The finished snapshots (top first) whose read-only overlay ``root`` is, for a
        # stage or an image: a copy may hard-link their files instead of writing them again.
        self.snapshots = tuple(os.fspath(p) for p in snapshots)

    # -- visibility

    def visible(self, rel: str, is_dir: bool) -> bool:
        if self.ignore is None or rel == "":
            return True
        if not self.ignore.excluded(rel, is_dir=is_dir):
            return True
        # An excluded directory still exists when a negated rule keeps something inside.
        return is_dir and not self.ignore.can_skip_dir(rel) and self._has_visible_child(rel)

    def _has_visible_child(self, rel: str) -> bool:
        try:
            with os.scandir(os.path.join(self._root_s, rel)) as it:
                for e in it:
                    is_dir = e.is_dir(follow_symlinks=False)
                    if self.visible(f"{rel}/{e.name}", is_dir):
                        return True
        except OSError:
            return False
        return False

    def _lstat_visible(self, rel: str) -> os.stat_result | None:
        try:
            st = os.lstat(os.path.join(self._root_s, rel)) if rel else os.lstat(self._root_s)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if self.visible(rel, stat.S_ISDIR(st.st_mode)) else None

    def _resolve(self, rel: str) -> str:
        return resolve_in_root(self.root, rel, visible=self.visible if self.ignore else None)

    # -- selection

    def select(self, pattern: str, *, excludes: Sequence[str] = ()) -> list[SourceMatch]:
        """Resolve one (already expanded) source path; see the module docstring."""
        rel = clean_source(pattern)
        comps = rel.split("/") if rel else []
        first_wild = next((i for i, c in enumerate(comps) if has_wildcards(c)), None)
        if first_wild is None:
            resolved = self._resolve(rel)
            st = self._lstat_visible(resolved)
            if st is None or stat.S_ISLNK(st.st_mode):
                raise self._not_found(pattern, rel)
            return [SourceMatch(rel, resolved, stat.S_ISDIR(st.st_mode))]
        base = self._resolve("/".join(comps[:first_wild]))
        if base and self._lstat_visible(base) is None:
            # fsutil walks the folder before the wildcard: a missing one fails the copy
            # (lstat ...: no such file or directory), where a folder without a match is
            # an empty copy. A file there walks as nothing, so it matches nothing.
            raise self._not_found(pattern, "/".join(comps[:first_wild]))
        out: list[SourceMatch] = []
        for found in self._glob(base, comps[first_wild:]):
            resolved = self._resolve(found)
            st = self._lstat_visible(resolved)
            if st is None or stat.S_ISLNK(st.st_mode):
                # a match that is a link to nothing here: BuildKit checksums matches with
                # their links followed, and fails ("/nowhere": not found)
                raise self._not_found(found, found)
            out.append(SourceMatch(found, resolved, stat.S_ISDIR(st.st_mode)))
        return out

    def _glob(self, base: str, pats: list[str]) -> Iterator[str]:
        """Matches of ``pats`` under ``base`` in lexical order, not following links."""
        try:
            with os.scandir(os.path.join(self._root_s, base) if base else self._root_s) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in entries:
            if not go_match(pats[0], e.name):
                continue
            child = f"{base}/{e.name}" if base else e.name
            is_dir = e.is_dir(follow_symlinks=False)
            if not self.visible(child, is_dir):
                continue
            if len(pats) == 1:
                yield child
            elif is_dir:
                yield from self._glob(child, pats[1:])

    def _not_found(self, pattern: str, rel: str) -> ContextError:
        shown = pattern if pattern else "."
        msg = f'COPY failed: "{shown}" not found in {self.label}'
        if self.ignore is not None:
            for cand in (rel, self._resolve(rel)):
                if not cand:
                    continue
                st = self._raw_lstat(cand)
                is_dir = st is not None and stat.S_ISDIR(st.st_mode)
                if st is not None and self.ignore.excluded(cand, is_dir=is_dir):
                    rule = self.ignore.rule_for(cand, is_dir=is_dir)
                    if rule is not None:
                        return ContextError(f"{msg} (excluded by .dockerignore rule {rule!r})")
                    return ContextError(f"{msg} (excluded by .dockerignore)")
        resolved = self._resolve(rel) if rel else rel
        if resolved != rel:
            # BuildKit names only the link's target ("/etc/hostname": not found); say both,
            # and why a target outside the tree is not what the host has there.
            where = f"the {self.label}" if self.label == "build context" else self.label
            return ContextError(f'{msg}: it leads to "/{resolved}", and links are followed '
                                f"inside {where}")
        return ContextError(msg)

    def _raw_lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self._root_s, rel))
        except OSError:
            return None

    # -- walking

    def walk(self, match: SourceMatch, *, excludes: Sequence[str] = ()) -> Iterator[TreeEntry]:
        """The match and, for a directory, everything visible below it, pre-order, sorted.

        ``excludes`` (COPY --exclude) apply to paths relative to the match; the match
        itself is never excluded (as BuildKit)."""
        for rel, path, st in self._walk_raw(match, excludes):
            yield TreeEntry(rel, path, st)

    def _walk_raw(self, match: SourceMatch, excludes: Sequence[str]) -> Iterator[tuple[str, str, os.stat_result]]:
        """``walk`` as (rel, path, stat) tuples: the checksum of a large context makes no
        TreeEntry for each of its tens of thousands of files."""
        exclude = _exclude_matcher(excludes)
        top = os.path.join(self._root_s, match.resolved) if match.resolved else self._root_s
        st = os.lstat(top)
        yield "", top, st
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk_dir(top, match.resolved, "", exclude)

    def _walk_dir(
        self, path: str, ctx_rel: str, rel: str, exclude: IgnoreMatcher | None
    ) -> Iterator[tuple[str, str, os.stat_result]]:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        ignore = self.ignore
        for e in entries:
            name = e.name
            child_rel = f"{rel}/{name}" if rel else name
            is_dir = e.is_dir(follow_symlinks=False)
            if ignore is not None or exclude is not None:
                child_ctx = f"{ctx_rel}/{name}" if ctx_rel else name
                hidden = False
                if ignore is not None and ignore.excluded(child_ctx, is_dir=is_dir):
                    if not is_dir or ignore.can_skip_dir(child_ctx):
                        continue
                    hidden = True
                if exclude is not None and exclude.excluded(child_rel, is_dir=is_dir):
                    if not is_dir or exclude.can_skip_dir(child_rel):
                        continue
                    hidden = True
                if hidden:
                    # Kept only for what negated rules bring back inside it.
                    st = e.stat(follow_symlinks=False)
                    inner = list(self._walk_dir(e.path, child_ctx, child_rel, exclude))
                    if inner:
                        yield child_rel, e.path, st
                        yield from inner
                    continue
            yield child_rel, e.path, e.stat(follow_symlinks=False)
            if is_dir:
                yield from self._walk_dir(e.path, f"{ctx_rel}/{name}" if ctx_rel else name,
                                          child_rel, exclude)

    # -- checksum

    def checksum(
        self,
        matches: Sequence[SourceMatch],
        *,
        excludes: Sequence[str] = (),
        stat_cache: Path | None = None,
    ) -> Digest:
        """The content checksum of what ``matches`` select (canonical form: module docstring).

        ``stat_cache`` names the store's cache; each tree keeps its own file beside it
        (``NAME.d/<sha256 of the tree's folder>.json``), so that a build of a small context
        never parses the entries of a large one."""
        if stat_cache is not None:
            stat_cache = stat_cache_file(stat_cache, self._root_s)
        cache = StatCache.shared(stat_cache)
        h = hashlib.sha256()
        h.update(CHECKSUM_VERSION.encode() + b"\n")
        for m in matches:
            h.update(canonical_json(["match", m.rel, m.is_dir]) + b"\n")
            inodes: dict[tuple[int, int], str] = {}
            # One encode and one update per entry: the lines are the canonical_json of
            # _record's lists, written out directly for the common kinds (same bytes).
            lines = [self._record_line(rel, path, st, cache, inodes)
                     for rel, path, st in self._walk_raw(m, excludes)]
            if lines:
                h.update(json_utf8("\n".join(lines) + "\n"))
        cache.save()
        return Digest.sha256(h.hexdigest())

    def _record_line(
        self, rel: str, path: str, st: os.stat_result, cache: StatCache,
        inodes: dict[tuple[int, int], str],
    ) -> str:
        """``canonical_json(self._record(...))`` as text, without the generic encoder for
        regular files and directories (a large context has tens of thousands of them)."""
        mode = st.st_mode
        if stat.S_ISREG(mode):
            link = ""
            if st.st_nlink > 1:
                link = inodes.setdefault((st.st_dev, st.st_ino), rel)
                link = "" if link == rel else link
            return (f'[{_json_str(rel)},"file",{mode & 0o7777},{st.st_size},'
                    f'"sha256:{cache.hexdigest(path, st)}",{_json_str(link)}]')
        if stat.S_ISDIR(mode):
            return f'[{_json_str(rel)},"dir",{mode & 0o7777},0,"",""]'
        return canonical_json(self._record(TreeEntry(rel, path, st), cache, inodes)).decode("utf-8")

    def _record(
        self, entry: TreeEntry, cache: StatCache, inodes: dict[tuple[int, int], str]
    ) -> list[object]:
        st = entry.st
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        if stat.S_ISREG(mode) or (stat.S_ISSOCK(mode) and self.sockets_as_files):
            link = ""
            if st.st_nlink > 1:
                link = inodes.setdefault((st.st_dev, st.st_ino), entry.rel)
                link = "" if link == entry.rel else link
            if stat.S_ISSOCK(mode):
                return [entry.rel, "file", perm, 0, str(Digest.sha256(hashlib.sha256().hexdigest())), ""]
            return [entry.rel, "file", perm, st.st_size, str(cache.digest(entry.path, st)), link]
        if stat.S_ISDIR(mode):
            return [entry.rel, "dir", perm, 0, "", ""]
        if stat.S_ISLNK(mode):
            return [entry.rel, "symlink", 0, 0, os.readlink(entry.path), ""]
        kind = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFSOCK: "socket"}
        dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else ""
        return [entry.rel, kind.get(stat.S_IFMT(mode), "other"), perm, 0, dev, ""]


def _exclude_matcher(excludes: Sequence[str]) -> IgnoreMatcher | None:
    if not excludes:
        return None
    from builder.dockerignore import IgnoreMatcher

    return IgnoreMatcher.from_patterns(list(excludes))


class BuildContext(DirTree):
    """The build context directory, seen through its .dockerignore.

    Files owned by anyone are copied as 0:0 (docker sends the context without owners);
    sockets arrive as empty regular files.
    """

    def __init__(self, root: Path, *, dockerfile_name: str, ignore: IgnoreMatcher | None,
                 keeps_stat_cache: bool = True) -> None:
        super().__init__(root, label="build context", owner=(0, 0), ignore=ignore, sockets_as_files=True)
        self.dockerfile_name = dockerfile_name
        # A fetched (remote) context lives in a new scratch folder each build: stat cache
        # entries for it would never be read again.
        self.keeps_stat_cache = keeps_stat_cache

    @classmethod
    def open(cls, context_dir: Path, dockerfile: Path | None = None, *, remote: bool = False) -> BuildContext:
        """Open a context; ``<Dockerfile>.dockerignore`` beside the Dockerfile wins over
        the context's ``.dockerignore`` (buildx). A ``remote`` context (a git checkout, a
        downloaded archive) has no ignore file applied, as BuildKit applies none to it."""
        from builder.dockerignore import IgnoreMatcher

        context_dir = Path(context_dir)
        if not context_dir.is_dir():
            raise ContextError(f"build context {str(context_dir)!r} is not a directory")
        name = dockerfile.name if dockerfile is not None else "Dockerfile"
        if remote:
            return cls(context_dir, dockerfile_name=name, ignore=None, keeps_stat_cache=False)
        candidates = []
        if dockerfile is not None:
            candidates.append((Path(dockerfile).parent, f"{dockerfile.name}.dockerignore"))
        candidates.append((context_dir, ".dockerignore"))
        ignore = None
        for folder, filename in candidates:
            data = read_ignore_file(folder, filename)
            if data is not None:
                ignore = IgnoreMatcher.from_bytes(data, filename)
                break
        return cls(context_dir, dockerfile_name=name, ignore=ignore)


def read_ignore_file(folder: Path, name: str) -> bytes | None:
    """An ignore file's bytes as BuildKit's dockerui reads them: from the folder's
    transferred copy, so a symlink resolves inside the folder; None when there is none
    to read (missing, a folder, a link leading nowhere), which BuildKit ignores too."""
    try:
        rel = resolve_in_root(folder, name)
        fd = os.open(os.path.join(folder, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, ContextError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- stat cache


def stat_cache_file(store_cache: Path, folder: str) -> Path:
    """The stat cache of one context folder: ``NAME.d/<sha256 of the folder>.json`` beside
    the store's ``NAME`` (one file per folder: a small context never parses a large one's)."""
    name = hashlib.sha256(os.fsencode(folder)).hexdigest()[:32]
    return store_cache.with_name(store_cache.name + ".d") / f"{name}.json"


class StatCache:
    """File digests keyed by what a stat says, persisted as JSON (write aside, rename)."""

    _VERSION = 1
    RACY_NS = 2_000_000_000  # files changed this recently may change again within one mtime tick
    # One parse per file and process (a build's COPY steps share it), kept while the file
    # holds exactly the text parsed or saved here (reading it back costs ~1 ms, parsing
    # a large context's ~50 ms).
    _loaded: dict[Path, tuple[str, StatCache]] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path | None, *, text: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, list[object]] = {}
        self._dirty = False
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8") if text is None else text)
                if isinstance(data, dict) and data.get("version") == self._VERSION:
                    self._entries = dict(data.get("entries", {}))
            except (OSError, ValueError):
                self._entries = {}  # a missing or broken cache is only slower
        self.reads = 0  # files actually read; tests use it

    @classmethod
    def shared(cls, path: Path | None) -> StatCache:
        """The cache of ``path``, parsed once per process while the file stays as parsed."""
        if path is None:
            return cls(None)
        key = Path(path)
        with cls._lock:
            try:
                text = key.read_text(encoding="utf-8")
            except (OSError, ValueError):
                return cls(key, text="")
            held = cls._loaded.get(key)
            if held is not None and held[0] == text:
                return held[1]
            cache = cls(key, text=text)
            cls._loaded[key] = (text, cache)
            return cache

    def digest(self, path: str, st: os.stat_result) -> Digest:
        return Digest.sha256(self.hexdigest(path, st))

    def hexdigest(self, path: str, st: os.stat_result) -> str:
        hit = self._entries.get(path)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and \
                hit[2] == st.st_ino and hit[3] == st.st_ctime_ns:
            return str(hit[4])
        key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        self.reads += 1
        hexd = h.hexdigest()
        racy = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < self.RACY_NS
        if self.path is not None and not racy:
            self._entries[path] = [*key, hexd]
            self._dirty = True
        return hexd

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        with self._lock:  # stages checksum in threads: one writer at a time
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            entries = dict(self._entries)  # a copy: another thread may be adding entries
            text = json.dumps({"version": self._VERSION, "entries": entries})
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
            self._dirty = False
            self._loaded[self.path] = (text, self)
