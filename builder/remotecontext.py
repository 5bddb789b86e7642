"""Remote build contexts: `pybuild build URL`, as `docker buildx build URL` takes one.

What the context argument is, in buildx's order: ``-`` is stdin; an existing folder is a
folder (even one named like ``github.com/owner/repo``); a git reference
(``builder.gitsource.is_git_ref``, the ``github.com/`` shorthand included) is a git
context; any other ``http(s)://`` URL is a remote file. Everything else is a folder that
does not exist, which the caller reports.

* A git context is the checkout of the ref (BuildKit's git source: ``builder.gitsource``),
  or of its ``:subdir``. ``.git`` is dropped unless the ``BUILDKIT_CONTEXT_KEEP_GIT_DIR``
  build arg (or ``?keep-git-dir=``) says to keep it, and never kept with a subdir.
* A remote file is streamed to a scratch file and judged by its content, as dockerui's
  ``DetectHTTPContext``: a tar archive (plain, gzip, bzip2, xz or zstd) is extracted and is
  the context; anything else is the Dockerfile itself, and the context holds it alone, as
  the file ``context`` (mode 0600), which is also the Dockerfile's name.
* ``-f`` names a file inside the context (the subdir, for a git context), as buildx sends
  it; an absolute ``-f`` is a file on this machine and ``-f -`` reads stdin.
* ``.dockerignore`` is not applied: BuildKit applies it only to a context sent from a
  local folder, never to a git checkout or a downloaded archive.

The scratch folder lives in the store's ``tmp/`` and is removed however the build ends
(an error, Ctrl-C); a killed process leaves it for the store's stale-entry sweep.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ContextError
from .fsutil import make_temp_dir

__all__ = ["RemoteContext", "context_kind", "dockerfile_in", "for_remote", "is_remote", "open_named",
           "open_named_contexts", "open_remote"]

_KEEP_GIT_DIR_ARG = "BUILDKIT_CONTEXT_KEEP_GIT_DIR"
_BOOL = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


@dataclass(frozen=True)
class RemoteContext:
    """A fetched context: the folder to build from and what it came from."""

    root: Path
    # "git", "archive" (an extracted tarball), "dockerfile" (a plain file), or "file" (a
    # named context's download, kept as it came)
    kind: str
    url: str  # credentials removed
    commit: str = ""  # git: the commit checked out
    ref: str = ""  # git: the ref it was found by
    subdir: str = ""
    digest: str = ""  # a downloaded file: the sha256 of its bytes
    given: str = ""  # the context argument as written, credentials removed

    def material(self) -> tuple[str, dict[str, str]]:
        """The provenance material of the context (BuildKit's git or HTTP source): the URL
        the build was asked for and the commit (sha1) or the download's sha256."""
        if self.kind == "git":
            return self.given or self.url, {"sha1": self.commit}
        algo, _, hexd = self.digest.partition(":")
        return self.given or self.url, {algo: hexd}

    @property
    def described(self) -> str:
        """How messages name it: ``git repository URL at COMMIT``, ``remote context URL``."""
        if self.kind == "git":
            at = f" at {self.commit[:12]}" if self.commit else ""
            sub = f" (subdir {self.subdir})" if self.subdir else ""
            return f"git repository {self.url}{at}{sub}"
        return f"remote build context {self.url}"

    def metadata(self) -> dict[str, Any]:
        """The metadata file's ``pybuild.context`` entry."""
        out: dict[str, Any] = {"type": "git" if self.kind == "git" else "http", "url": self.url}
        if self.kind == "git":
            out.update(ref=self.ref, commit=self.commit)
            if self.subdir:
                out["subdir"] = self.subdir
        else:
            out.update(digest=self.digest, archive=self.kind == "archive")
        return out


def is_remote(arg: str) -> bool:
    """Whether a build's context argument is fetched: a git repository or an http(s) URL."""
    return context_kind(arg) in ("git", "http")


def context_kind(arg: str) -> str:
    """``"stdin"``, ``"local"``, ``"git"`` or ``"http"`` for a build's context argument."""
    if arg == "-":
        return "stdin"
    if os.path.isdir(arg):
        return "local"
    from .gitsource import is_git_ref

    try:
        if is_git_ref(arg, context=True):
            return "git"
    except ContextError:
        pass  # a URL Go's parser refuses: the download below says what is wrong with it
    if arg.lower().startswith(("http://", "https://")):
        return "http"
    return "local"


def _keep_git_dir(build_args: Mapping[str, str]) -> bool | None:
    value = build_args.get(_KEEP_GIT_DIR_ARG)
    if value is None:
        return None
    parsed = _BOOL.get(value.strip().lower())
    if parsed is None:  # BuildKit ignores a value strconv.ParseBool refuses
        return None
    return parsed


@contextmanager
def open_remote(arg: str, scratch_parent: Path, *, build_args: Mapping[str, str],
                progress: Any, source_date_epoch: int | None = None) -> Iterator[RemoteContext]:
    """Fetch the remote context ``arg`` into a scratch folder; removed on the way out.
    With a SOURCE_DATE_EPOCH (build arg or option) a git checkout's files get the commit's
    time, as dockerui asks its git source for then (``GitMTimeCommit``)."""
    from .gitsource import redact

    git = context_kind(arg) == "git"
    commit_times = source_date_epoch is not None or bool(build_args.get("SOURCE_DATE_EPOCH"))
    # buildx's names for the step that fetches the context
    title = f"[internal] load git source {redact(arg)}" if git else "[internal] load remote build context"
    with _fetched(scratch_parent, "remote-context-", title, progress,
                  lambda scratch: _git_context(arg, scratch, build_args, commit_times) if git
                  else _http_context(arg, scratch)) as remote:
        yield remote


@contextmanager
def _fetched(scratch_parent: Path, prefix: str, title: str, progress: Any,
             fetch: Callable[[Path], RemoteContext], what: str = "") -> Iterator[RemoteContext]:
    """``fetch`` into a new scratch folder of ``scratch_parent``, shown as the step
    ``title``; its failure ends the step, its message prefixed by ``what``. The folder is
    removed however the build ends."""
    from .cache.store import remove_tree

    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(make_temp_dir(scratch_parent, prefix))
    try:
        sid = progress.start(title)
        try:
            remote = fetch(scratch)
        except ContextError as exc:
            progress.error(sid, what + exc.message)
            if what:
                raise ContextError(what + exc.message, hint=exc.hint) from None
            raise
        progress.internal_done(sid)
        yield remote
    finally:
        remove_tree(scratch)


def _git_context(arg: str, scratch: Path, build_args: Mapping[str, str],
                 commit_times: bool) -> RemoteContext:
    from .gitsource import checkout_git, parse_git_ref, redact

    gr = parse_git_ref(arg)
    if commit_times and not gr.mtime:
        gr = replace(gr, mtime="commit")
    keep = _keep_git_dir(build_args)
    if keep is None:
        keep = bool(gr.keep_git_dir)
    elif gr.keep_git_dir:
        keep = True  # either one asks for it, as dockerui's DetectGitContext adds both
    done = checkout_git(gr, scratch, keep_git_dir=keep)
    return RemoteContext(scratch / done.rel, "git", redact(gr.remote), commit=done.commit,
                         ref=done.ref, subdir=gr.subdir, given=redact(arg))


def _download(url: str, scratch: Path) -> tuple[Path, str, Path]:
    """``url`` downloaded into ``scratch``: the file, the digest of its bytes, and the
    context folder (``scratch``/context, empty, mode 0755) it is to make."""
    from .copy_add import fetch_url
    from .digest import sha256_file

    download = scratch / "download"
    download.mkdir()
    path = download / fetch_url(url, download)
    root = scratch / "context"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    return path, str(sha256_file(path)[0]), root


def _http_context(url: str, scratch: Path) -> RemoteContext:
    from .copy_add import extract_archive, is_archive
    from .gitsource import redact

    path, digest, root = _download(url, scratch)
    shown = redact(url)
    if is_archive(os.fspath(path)):
        try:
            extract_archive(os.fspath(path), os.fspath(root))
        except ContextError as exc:
            raise ContextError(f"remote build context {shown}: "
                               f"{exc.message.removeprefix('ADD failed: ')}") from None
        os.chmod(root, 0o755)  # an archive's "./" entry does not decide the context's mode
        return RemoteContext(root, "archive", shown, digest=digest, given=shown)
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith((b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")):
        raise ContextError(f"remote build context {shown}: compressed data that holds no tar archive",
                           hint="serve a tar archive (.tar, .tar.gz, ...) or a plain Dockerfile")
    # dockerui: the file is the Dockerfile, and the context holds it as "context"
    shutil.move(os.fspath(path), os.fspath(root / "context"))
    return RemoteContext(root, "dockerfile", shown, digest=digest, given=shown)


@contextmanager
def open_named(name: str, value: str, scratch_parent: Path, *, progress: Any) -> Iterator[RemoteContext]:
    """A named context given as a URL (``--build-context NAME=URL``), fetched as dockerui
    loads one: a git reference is its checkout (``.git`` kept only when the URL asks for
    it, the ``BUILDKIT_CONTEXT_KEEP_GIT_DIR`` build arg being the main context's; the files
    with the commit's time); any other URL is downloaded as it is, never extracted, as the
    file ``context`` (mode 0600) of an otherwise empty folder. Removed on the way out, as ``open_remote``'s."""
    from .gitsource import redact

    git = context_kind(value) == "git"
    title = f"[context {name}] load git source {redact(value)}" if git else f"[context {name}] {redact(value)}"
    # a checkout's files take the commit's time: a rebuild of the same commit makes the
    # same layers (BuildKit gets there by keeping the first checkout's snapshot)
    with _fetched(scratch_parent, "named-context-", title, progress,
                  lambda scratch: _git_context(value, scratch, {}, True) if git
                  else _http_file(value, scratch), what=f"--build-context {name}: ") as remote:
        yield remote


@contextmanager
def open_named_contexts(contexts: Mapping[str, str], scratch_parent: Path, *,
                        progress: Any) -> Iterator[tuple[dict[str, str], dict[str, RemoteContext]]]:
    """The --build-context values with each git or http(s) URL among them fetched
    (``open_named``) and replaced by the folder it was fetched to; and the fetched ones by
    name. The folders are removed on the way out."""
    from contextlib import ExitStack

    from .base import is_url_context

    folders, remotes = dict(contexts), {}
    with ExitStack() as stack:
        for name, value in contexts.items():
            if is_url_context(value):
                remotes[name] = stack.enter_context(open_named(name, value, scratch_parent,
                                                               progress=progress))
                folders[name] = os.fspath(remotes[name].root)
        yield folders, remotes


def _http_file(url: str, scratch: Path) -> RemoteContext:
    from .gitsource import redact

    path, digest, root = _download(url, scratch)
    os.replace(path, root / "context")
    os.chmod(root / "context", 0o600)
    return RemoteContext(root, "file", redact(url), digest=digest, given=redact(url))


def dockerfile_in(remote: RemoteContext, flag: str | None) -> str | None:
    """The ``-f`` a build from ``remote`` uses: a path inside the fetched context (checked
    to exist), or the flag itself when it names stdin or a file on this machine."""
    from .context import resolve_in_root

    if flag == "-" or (flag and os.path.isabs(flag)):
        return flag  # buildx: stdin, or a local Dockerfile beside the remote context
    if remote.kind == "dockerfile":
        return os.fspath(remote.root / "context")  # dockerui names the Dockerfile so, whatever -f says
    name = flag or "Dockerfile"
    path = remote.root / resolve_in_root(remote.root, name)
    if flag is None and not path.exists() and (remote.root / "dockerfile").is_file():
        path = remote.root / "dockerfile"
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise ContextError(f"failed to read the Dockerfile: {name} {what} in the {remote.described}",
                           hint="-f names a file inside a remote context (relative to its root)")
    return os.fspath(path)


def for_remote(req: Any, remote: RemoteContext) -> Any:
    """The request with its ``-f`` resolved inside the fetched context."""
    return replace(req, dockerfile=dockerfile_in(remote, req.dockerfile))
