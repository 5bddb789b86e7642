"""Git sources: which strings name a git repository, and checking one out.

One module for both users of git: ``ADD <git URL>`` (``builder.copy_add``) and a build
whose context is a git URL (``builder.remotecontext``).

* What is a git reference follows BuildKit's ``dfgitutil.ParseGitRef``: ``git://`` and
  ``ssh://`` URLs, ``http(s)://`` URLs whose path ends in ``.git``, scp-like
  ``user@host:path``; and, for a build context only, the ``github.com/owner/repo``
  shorthand. ``#ref:subdir`` and the ``?ref=&branch=&tag=&subdir=&checksum=&keep-git-dir=
  &submodules=&mtime=`` query carry the options, with BuildKit's conflict rules.
* A ref is resolved as BuildKit's git source resolves it: ``ls-remote`` of the ref, a
  branch winning over a tag of the same name, an annotated tag peeled to its commit; no
  ref means the remote's default branch (its ``HEAD``). A full commit SHA is taken as is.
* The checkout fetches only that commit when the server can (a shallow fetch; a dumb
  HTTP server gets a full one), checks it out with its submodules (unless
  ``submodules=false``), and drops ``.git`` (and the submodules' ``.git`` files, which
  point into it) unless the git directory is kept. A subdirectory must be a directory
  reached through directories only.

Every failure is a ``ContextError`` naming the repository (credentials removed): git not
installed, an unreachable host, a missing repository, ref or subdirectory.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from builder.context import resolve_in_root
from builder.errors import ContextError

__all__ = ["GitCheckout", "GitRef", "checkout_git", "git_checkout", "is_git_ref", "is_transient",
           "parse_git_ref", "redact", "resolve_commit"]

# sshutil's scp-style URL: user@host:path[?query][#fragment]
_SCP = re.compile(r"^([a-zA-Z0-9_-]+)@([a-zA-Z0-9.-]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_PROTO = re.compile(r"^([a-zA-Z0-9]+)://")
_GIT_PROTOS = ("http", "https", "ssh", "git")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BOOL = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


@dataclass(frozen=True)
class GitRef:
    """A parsed git reference: the remote git is given, and what to take from it."""

    remote: str
    ref: str = ""
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: bool | None = None
    submodules: bool | None = None
    mtime: str = ""  # "" / "checkout": checkout time; "commit": the commit's time


@dataclass(frozen=True)
class GitCheckout:
    """A checkout under a scratch folder: ``rel`` is the folder to use (the repository or
    its subdirectory), relative to the scratch folder; ``commit`` what was checked out."""

    rel: str
    commit: str
    ref: str


def redact(url: str) -> str:
    """The URL without a password (BuildKit's RedactCredentials): ``user:xxxxx@``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:xxxxx@{host}"))


# ---------------------------------------------------------------- what is a git ref


def is_git_ref(src: str, *, context: bool = False) -> bool:
    """Whether BuildKit's ParseGitRef takes ``src`` for a git repository; ``context``: as a
    build context, where the ``github.com/owner/repo`` shorthand counts too."""
    if src.startswith(("./", "../")):
        return False
    if src.startswith("github.com/"):
        return context
    m = _PROTO.match(src)
    if m:
        proto = m.group(1).lower()
        if proto not in _GIT_PROTOS:
            return False
        if proto in ("http", "https"):
            try:
                path = unquote(urlsplit(src).path)
            except ValueError as exc:  # a host Go's url.Parse refuses too ("http://[bad")
                raise ContextError(f"parse {src!r}: {exc}") from None
            return path.endswith(".git")
        return True
    return _SCP.match(src) is not None


def _clean_subdir(subdir: str) -> str:
    """path.Join("/", subdir) without its leading slash, as gitutil's parseOpts."""
    return os.path.normpath("/" + subdir).lstrip("/") if subdir else ""


def parse_git_ref(src: str) -> GitRef:
    """Split a git reference into remote, ``#ref:subdir`` and the query's options."""
    m = _SCP.match(src) if not _PROTO.match(src) else None
    if m is not None:
        user, host, path, query, fragment = m.groups()
        remote = f"{user}@{host}:{path}"
        query, fragment = query or "", fragment or ""
    else:
        base, _, fragment = src.partition("#")
        remote, _, query = base.partition("?")
        if remote.startswith("github.com/"):
            remote = "https://" + remote
    ref, _, subdir = fragment.partition(":")
    gr = GitRef(remote, ref, _clean_subdir(subdir))
    return _load_query(gr, src, query) if query else gr


def _flag(key: str, values: list[str]) -> bool:
    if not values:
        return True
    value = _BOOL.get(values[0].lower())
    if value is None:
        raise ContextError(f"invalid {key} value: {values[0]!r}")
    return value


def _load_query(gr: GitRef, src: str, query: str) -> GitRef:
    """BuildKit's GitRef.loadQuery: each key once, with a value unless a flag; ref, tag,
    branch and subdir must agree with the fragment."""
    tag = branch = ""
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if len(values) > 1:
            raise ContextError(f"git source {redact(src)}: query {key!r} has multiple values")
        if values[0] == "":
            if key not in ("submodules", "keep-git-dir", "fetch-by-commit"):
                raise ContextError(f"git source {redact(src)}: query {key!r} has no value")
            values = []
        if key == "ref":
            if gr.ref and gr.ref != values[0]:
                raise ContextError(f"ref conflicts: {gr.ref!r} vs {values[0]!r}")
            gr = replace(gr, ref=values[0])
        elif key == "tag":
            tag = values[0]
        elif key == "branch":
            branch = values[0]
        elif key == "subdir":
            sub = _clean_subdir(values[0])
            if gr.subdir and gr.subdir != sub:
                raise ContextError(f"subdir conflicts: {gr.subdir!r} vs {values[0]!r}")
            gr = replace(gr, subdir=sub)
        elif key in ("checksum", "commit"):
            gr = replace(gr, checksum=values[0])
        elif key == "keep-git-dir":
            gr = replace(gr, keep_git_dir=_flag(key, values))
        elif key == "submodules":
            gr = replace(gr, submodules=_flag(key, values))
        elif key == "fetch-by-commit":
            _flag(key, values)  # pybuild fetches the commit it resolved either way
        elif key == "mtime":
            if values[0] not in ("checkout", "commit"):
                raise ContextError(f'invalid mtime value: {values[0]!r} (must be "checkout" or "commit")')
            gr = replace(gr, mtime=values[0])
        else:
            raise ContextError(f"git source {redact(src)}: unexpected query {key!r}")
    if tag:
        tag = tag if tag.startswith("refs/tags/") else f"refs/tags/{tag}"
        if gr.ref and gr.ref != tag:
            raise ContextError(f"ref conflicts: {gr.ref!r} vs {tag!r}")
        gr = replace(gr, ref=tag)
    if branch:
        if tag:
            raise ContextError("branch conflicts with tag")
        branch = branch if branch.startswith("refs/heads/") else f"refs/heads/{branch}"
        if gr.ref and gr.ref != branch:
            raise ContextError(f"ref conflicts: {gr.ref!r} vs {branch!r}")
        gr = replace(gr, ref=branch)
    return gr


# ---------------------------------------------------------------- running git


# What would point git at another repository or config than the one in hand.
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
             "GIT_CONFIG_COUNT")


def _git_env() -> dict[str, str]:
    """The environment git runs in: as BuildKit's git CLI, no system or global config (a
    user's autocrlf or filters must not change what a checkout holds), C messages, never a
    prompt; ssh is the user's own (agent, keys, known hosts) in batch mode."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1",
               GIT_CONFIG_GLOBAL=os.devnull)
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


# What git (through curl or ssh) says when a transfer broke off on the way rather than
# being refused: a reset or dropped connection, a cut stream, a server error (5xx). Such a
# failure is tried again, as BuildKit's registry client retries a reset connection; an
# unknown host, a refused connection, a missing repository or a denied login is not.
_TRANSIENT = re.compile(
    r"Connection reset by peer|Recv failure|Send failure|Empty reply from server|RPC failed"
    r"|early EOF|remote end hung up unexpectedly|expected flush after ref listing"
    r"|transfer closed with outstanding read data|returned error: 5\d\d|SSL_ERROR_SYSCALL"
    r"|GnuTLS recv error|Connection closed by remote host")
RETRY_DELAYS = (0.5, 2.0)  # seconds before the second and the third attempt


def is_transient(output: str) -> bool:
    """Whether git's ``output`` tells of a transfer that broke off (worth another try)."""
    return _TRANSIENT.search(output) is not None


def _git(args: list[str], *, cwd: str | None = None, remote: str = "") -> str:
    """Run git quietly (never asking for a password); its failure as a ContextError that
    names ``remote`` and git's own last words. A command that reaches ``remote`` is tried
    again when the transfer broke off (``_TRANSIENT``); fetches and listings are safe to
    repeat."""
    attempts = 1 + (len(RETRY_DELAYS) if remote else 0)
    for attempt in range(attempts):
        try:
            # BuildKit's guard: a repository may not pull local files in as submodules
            proc = subprocess.run(["git", "-c", "protocol.file.allow=user", *args], check=False,
                                  cwd=cwd, env=_git_env(), capture_output=True, text=True)
        except FileNotFoundError:
            raise ContextError("git is not installed: a git source needs the git command",
                               hint="install it (apt-get install git) or build from a folder") from None
        if proc.returncode == 0:
            return proc.stdout.strip()
        output = proc.stderr or proc.stdout
        if attempt + 1 == attempts or not is_transient(output):
            break
        time.sleep(RETRY_DELAYS[attempt])
    message = _git_failure(args, output, remote)
    if attempt:
        message += f" (tried {attempt + 1} times)"
    raise ContextError(message)


def _git_failure(args: list[str], output: str, remote: str) -> str:
    while len(args) > 2 and args[0] == "-c":
        args = args[2:]  # name the command, not its settings
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    why = (fatal[-1] if fatal else lines[-1] if lines else "exit status 128").split(": ", 1)[-1]
    where = redact(remote)
    if where:
        why = why.replace(remote, where)
        if "unable to access" in why or "Could not resolve" in why or "Connection refused" in why \
                or "Failed to connect" in why or "not found" in why or "does not appear" in why:
            return f"cannot read git repository {where}: {why}"
        return f"git {args[0]} of {where} failed: {why}"
    return f"git {args[0]} failed: {why}"


def _default_branch(remote: str) -> str:
    """The remote's HEAD branch (``ls-remote --symref``), or HEAD itself."""
    out = _git(["ls-remote", "--symref", "--", remote, "HEAD"], remote=remote)
    for line in out.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            return line[5:-5]
    return "HEAD"


def resolve_commit(gr: GitRef) -> tuple[str, str]:
    """(commit, ref name) the reference names now, as BuildKit's git source finds it;
    ("", ref) for an abbreviated commit, which only a full fetch can find."""
    if _SHA.match(gr.ref):
        return gr.ref, gr.ref
    ref = gr.ref or _default_branch(gr.remote)
    out = _git(["ls-remote", "--", gr.remote, ref, f"{ref}^{{}}"], remote=gr.remote)
    if not out and not gr.ref:
        raise ContextError(f"cannot read git repository {redact(gr.remote)}: it lists no refs "
                           "(an empty repository, or none at that address)")
    bare = ref.removeprefix("refs/")
    head_ref = "refs/heads/" + ref.removeprefix("refs/heads/")
    tag_ref = "refs/tags/" + ref.removeprefix("refs/tags/")
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    # a full ref first, then a branch, then a tag (peeled when annotated): git checkout's order
    for name in (f"refs/{bare}" if ref != "HEAD" else "HEAD", head_ref):
        if name in found:
            return found[name], name
    if tag_ref in found:
        return found.get(tag_ref + "^{}", found[tag_ref]), tag_ref
    if re.fullmatch(r"[0-9a-f]{4,63}", ref):
        return "", ref
    raise ContextError(f"git repository {redact(gr.remote)}: ref {ref!r} not found "
                       "(no branch, tag or commit of that name)")


# ---------------------------------------------------------------- checkout


def _fetch(repo: str, gr: GitRef, commit: str, ref: str) -> str:
    """Fetch ``commit`` (or, abbreviated, whatever ``ref`` names) into ``repo``; the commit."""
    if commit and ref.startswith("refs/"):
        specs = [f"+{ref}:{ref}"]
    elif commit:
        specs = [commit]
    else:
        specs = []
    if specs:
        try:
            _git(["fetch", "-q", "--depth=1", "--no-tags", "origin", *specs], cwd=repo, remote=gr.remote)
        except ContextError:
            # dumb HTTP knows no shallow fetch, and not every server gives a bare commit
            specs = []
    if not specs:
        _git(["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], cwd=repo,
             remote=gr.remote)
    want = commit or ref
    try:
        return _git(["rev-parse", "--verify", "--quiet", f"{want}^{{commit}}"], cwd=repo)
    except ContextError:
        raise ContextError(f"git repository {redact(gr.remote)}: ref {ref!r} not found") from None


def checkout_git(gr: GitRef, scratch: os.PathLike[str] | str, *, keep_git_dir: bool = False) -> GitCheckout:
    """Check ``gr`` out into ``scratch``/repo, as BuildKit's git source does."""
    if shutil.which("git") is None:
        raise ContextError(f"git is not installed: {redact(gr.remote)} is a git repository",
                           hint="install git (apt-get install git), or build from a folder")
    commit, ref = resolve_commit(gr)
    repo = os.path.join(os.fspath(scratch), "repo")
    _git(["init", "-q", repo])
    _git(["remote", "add", "origin", gr.remote], cwd=repo)
    commit = _fetch(repo, gr, commit, ref)
    if gr.checksum and not commit.startswith(gr.checksum.lower()):
        raise ContextError(f"expected checksum to match {gr.checksum}, got {commit}")  # BuildKit's git source
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], cwd=repo,
         remote=gr.remote)
    submodules: list[str] = []
    if gr.submodules is not False and os.path.exists(os.path.join(repo, ".gitmodules")):
        submodules = _update_submodules(repo, gr.remote)
    when = int(_git(["log", "-1", "--format=%ct", commit], cwd=repo)) if gr.mtime == "commit" else None
    keep = keep_git_dir and not gr.subdir  # BuildKit keeps .git only for the whole checkout
    if keep:
        _git(["remote", "set-url", "origin", redact(gr.remote)], cwd=repo)
        _git(["reflog", "expire", "--all", "--expire=now"], cwd=repo)
        fetch_head = os.path.join(repo, ".git", "FETCH_HEAD")
        if os.path.exists(fetch_head):
            os.unlink(fetch_head)
    else:
        for path in submodules:
            link = os.path.join(repo, path, ".git")
            if os.path.isfile(link) and not os.path.islink(link):
                os.unlink(link)  # "gitdir: ../.git/modules/...": it would lead nowhere
        shutil.rmtree(os.path.join(repo, ".git"))
    if when is not None:
        _set_mtimes(repo, when)  # last: dropping .git changes the top folder's time
    rel = "repo"
    if gr.subdir:
        rel = os.path.join("repo", _subdir(repo, gr, commit))
    os.chmod(os.path.join(os.fspath(scratch), rel), 0o755)
    return GitCheckout(rel, commit, ref)


def _update_submodules(repo: str, remote: str) -> list[str]:
    """``submodule update --init --recursive`` (shallow when the server can); the paths of
    every submodule, nested ones too, relative to the repository."""
    args = ["submodule", "update", "--init", "--recursive"]
    try:
        _git([*args, "--depth=1"], cwd=repo, remote=remote)
    except ContextError:
        _git(args, cwd=repo, remote=remote)
    out = _git(["submodule", "--quiet", "foreach", "--recursive", "echo \"$displaypath\""], cwd=repo)
    return [line for line in out.splitlines() if line]


def _set_mtimes(root: str, when: int) -> None:
    """Every entry's time set to ``when`` (mtime=commit), directories after their children."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if ".git" in os.path.relpath(dirpath, root).split(os.sep):
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
        os.utime(dirpath, (when, when))


def _subdir(repo: str, gr: GitRef, commit: str) -> str:
    """The subdirectory, checked as BuildKit's validateDirsOnly: directories all the way."""
    where = f"git repository {redact(gr.remote)} at {commit[:12]}"
    done = repo
    for part in gr.subdir.split("/"):
        done = os.path.join(done, part)
        if os.path.islink(done):
            raise ContextError(f"{where}: invalid subdir {gr.subdir!r}: {part!r} is a symlink")
        if not os.path.isdir(done):
            what = "not found" if not os.path.lexists(done) else "not a directory"
            raise ContextError(f"{where}: subdirectory {gr.subdir!r} {what}")
    return resolve_in_root(repo, gr.subdir)


def git_checkout(
    src: str, scratch: os.PathLike[str] | str, *, keep_git_dir: bool = False, checksum: str | None = None
) -> str:
    """ADD's checkout of the git source ``src`` under ``scratch``: the path (relative to
    scratch) whose contents ADD copies. ``--keep-git-dir`` and ``--checksum`` join the
    source's own options (a different checksum in both is an error)."""
    gr = parse_git_ref(src)
    if checksum and gr.checksum and checksum != gr.checksum:
        import json

        raise ContextError(f"checksum mismatch {json.dumps(checksum)} != {json.dumps(gr.checksum)}")
    gr = replace(gr, checksum=checksum or gr.checksum)
    keep = gr.keep_git_dir if gr.keep_git_dir is not None else keep_git_dir
    return checkout_git(gr, scratch, keep_git_dir=keep).rel
