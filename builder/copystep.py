"""COPY and ADD as build steps: expand the words, pick the source tree, key the step by
the content it selects, and the action that copies onto the overlay.

The file semantics themselves are builder.copy's; this module only wires a step to them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import instructions as ins
from .errors import BuildError, ContextError

if TYPE_CHECKING:
    from .config import ImageState
    from .dispatch import StageEnv
    from .graph import Stage
    from .solve import Solver

__all__ = ["CopyPlan", "plan_copy", "resolve_chown", "source_tree"]


@dataclass(frozen=True)
class CopyPlan:
    """A COPY or ADD step ready to key and run: its op, action, title and history."""

    op: dict[str, Any]
    action: Callable[[list[Path], Path, int], None]
    title: str
    history: str
    link: bool


def _kind(src: str, is_add: bool) -> str:
    """"git", "url" or "path": BuildKit's reading of a source word (COPY knows only paths
    and URLs, which it refuses)."""
    if "://" not in src and "@" not in src:
        return "path"  # no URL or git form (scp-like git needs user@host): no need to ask
    from .copy_add import classify_source

    kind = classify_source(src)
    if not is_add and kind == "git":
        return "url" if src.startswith(("http://", "https://")) else "path"
    return kind


def resolve_chown(root: Path | None, spec: str) -> tuple[int, int]:
    """`--chown=user[:group]` as BuildKit reads it: names through the image's /etc/passwd
    and /etc/group (a name not found stays 0), a bare number is both uid and gid.

    Once there is a colon the group is given, even empty: BuildKit's llb.WithUser keeps the
    empty word as a name and UserOpt's marshal sends an unnamed user as id 0, so `alice:` is
    alice's uid with gid 0, not alice's primary group."""
    user, colon, group = spec.partition(":")
    uid = gid = 0
    if (number := _number(user)) is not None:
        uid = gid = number
    elif user:
        for fields in _read_db(root, "etc/passwd"):
            if len(fields) >= 4 and fields[0] == user:
                uid, gid = _int(fields[2]), _int(fields[3])
                break
    if colon:
        if not group:
            gid = 0
        elif (number := _number(group)) is not None:
            gid = number
        else:
            for fields in _read_db(root, "etc/group"):
                if len(fields) >= 3 and fields[0] == group:
                    gid = _int(fields[2])
                    break
    return uid, gid


def _number(word: str) -> int | None:
    """A user or group word that is an id, as llb's parseUID reads it: decimal digits that
    fit a 32-bit signed int. Anything else (99999999999 too) is a name, looked up."""
    if word.isascii() and word.isdigit() and int(word) < 2**31:
        return int(word)
    return None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _read_db(root: Path | None, rel: str) -> list[list[str]]:
    if root is None:
        return []
    from .fsutil import secure_join

    try:
        text = secure_join(root, rel).read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def plan_copy(solver: Solver, stage: Stage, node: ins.Copy | ins.Add, image: ImageState,
              env: StageEnv) -> CopyPlan:
    from .copy import SourceSpec, copy_into, dest_path
    from .expand import expand_heredoc

    is_add = isinstance(node, ins.Add)
    verb = "ADD" if is_add else "COPY"
    sources = [env.expand(s, image, node) for s in node.sources]
    dest = env.expand(node.dest, image, node)
    chown = env.expand(node.chown, image, node) if node.chown else None
    chmod = env.expand(node.chmod, image, node) if node.chmod else None
    excludes = [env.expand(e, image, node) for e in node.excludes]
    parents = bool(getattr(node, "parents", False))
    from_value = env.expand(node.from_stage, image, node) if isinstance(node, ins.Copy) and node.from_stage else None
    checksum_flag = env.expand(node.checksum, image, node) if is_add and node.checksum else None  # type: ignore[union-attr]
    if chmod is not None:
        from .copy import parse_chmod

        try:
            parse_chmod(chmod)
        except ContextError as exc:  # BuildKit's own sentence, which names the value
            raise BuildError(exc.message) from None
        except ValueError as exc:
            raise BuildError(f"invalid chmod parameter: {chmod!r} ({exc})") from None

    heredocs = []
    for doc in node.heredocs:
        text = doc.data  # <<- strips the leading tabs (instructions/parse.go parseSourcesAndDest)
        if doc.expand:
            text = expand_heredoc(text, env.lookup(image), used=env.used)
        heredocs.append((doc.name, text))

    source_label, tree_factory, content_key = source_tree(solver, node, from_value, image)
    store = solver.store
    # only a local context folder, which the next build reads again, keeps a stat cache
    keeps = source_label == "context" and getattr(solver.context, "keeps_stat_cache", True)
    stat_cache = store.root / "statcache.json" if keeps else None
    checksums: list[str] = []
    remote: list[dict[str, Any]] = []
    kinds = {src: _kind(src, is_add) for src in sources}
    if checksum_flag and len(sources) != 1:  # heredocs are not counted
        raise BuildError("checksum can't be specified for multiple sources")
    for src in sources:
        if kinds[src] == "git":
            remote.append({"git": src, "commit": _git_commit(src), "keep": bool(node.keep_git_dir)})  # type: ignore[union-attr]
        elif kinds[src] == "url":
            if not is_add:
                raise BuildError(f"source can't be a URL for COPY: {src}")
            remote.append({"url": src, "checksum": checksum_flag or _url_identity(src)})
    if checksum_flag and not remote:
        raise BuildError("checksum requires HTTP(S) or Git sources")
    local = [s for s in sources if kinds[s] == "path"]
    # The names the copy makes in its destination when that is an existing folder, if that
    # is all it makes: files selected by plain COPY, each going in under its own name (a
    # folder's contents would merge into it; --parents, ADD, remote and heredoc sources
    # are left to the overlay).
    made: list[str] | None = [] if not (is_add or parents or remote or heredocs) else None
    if local and source_label == "unknown":
        # `pybuild plan`: the source stage has steps that would run; its files cannot be
        # hashed, so this step cannot be found in the cache either: it would run.
        checksums.append("unknown")
        made = None
    elif local:
        from .copy_parents import select_parents

        with tree_factory() as tree:
            for src in local:
                try:
                    if parents:
                        matches = [m for m, _ in select_parents(tree, src)]
                    else:
                        matches = tree.select(src, excludes=excludes)
                except ContextError as exc:
                    message = exc.message
                    if message.startswith(("COPY failed: ", "ADD failed: ")):
                        message = message.split(": ", 1)[1]
                    raise ContextError(f"{verb} failed: {message}", hint=exc.hint) from None
                if made is not None:
                    made = (None if any(m.is_dir for m in matches)
                            else made + [m.rel.rpartition("/")[2] for m in matches])
                checksums.append(str(tree.checksum(matches, excludes=excludes, stat_cache=stat_cache)))

    op: dict[str, Any] = {
        "kind": verb.lower(), "sources": sources, "dest": dest, "workdir": image.workdir or "/",
        "chown": chown, "chmod": chmod, "parents": parents, "excludes": excludes,
        "link": bool(node.link), "from": content_key, "content": checksums, "remote": remote,
        "heredocs": [[n, t] for n, t in heredocs], "unpack": getattr(node, "unpack", None),
        "epoch": solver.opts.source_date_epoch,
    }

    words = [verb]
    if parents:
        words.append("--parents")
    if chown:
        words.append(f"--chown={chown}")
    if chmod:
        words.append(f"--chmod={chmod}")
    words.extend(sources)
    words.extend(f"<<{n}" for n, _ in heredocs)
    words.append(dest)
    history = " ".join(words) + " # buildkit"
    title = node.heading
    workdir = image.workdir or "/"
    link = bool(node.link)

    def action(lowers: list[Path], upper: Path, sid: int) -> None:
        donor = None
        with contextlib.ExitStack() as stack:
            specs = []
            if local:
                tree = stack.enter_context(tree_factory())
                specs.extend(SourceSpec.path(tree, s) for s in local)
            for src in sources:
                if kinds[src] == "git":
                    specs.append(SourceSpec.git(src, keep_git_dir=bool(node.keep_git_dir),  # type: ignore[union-attr]
                                                checksum=checksum_flag))
                elif kinds[src] == "url":
                    specs.append(SourceSpec.url(src, checksum=checksum_flag))
            specs.extend(SourceSpec.inline(n, t.encode()) for n, t in heredocs)
            if link or solver.runner.copy_up_to(lowers, upper, dest_path(dest, workdir)[0],
                                                 names=made):
                # --link, or a destination no layer below has, or only files new to the
                # folder below: what the step writes cannot meet anything below it, so it
                # goes straight into the upper directory (creating files through an overlay
                # mount costs about twice as much, and mounting one costs more than the copy).
                owner_root = stack.enter_context(solver.runner.merged(lowers, None)) if lowers and chown else None
                root = upper
                donor = solver.donor(sid)
            else:
                root = stack.enter_context(solver.runner.merged(lowers, upper))
                owner_root = root
            ids = resolve_chown(owner_root, chown) if chown else None
            # The explainer remembers the files this step copied: listed as they are copied.
            explainer = solver.explainer if source_label == "context" else None
            recorder = explainer.files_recorder(op) if explainer is not None else None
            copy_into(root, specs, dest, workdir=workdir, chown=ids, chmod=chmod, parents=parents,
                      excludes=excludes, is_add=is_add, unpack_archives=getattr(node, "unpack", None),
                      mtime=solver.opts.source_date_epoch, scratch_dir=store.root / "tmp",
                      observe=recorder, donor=donor)
            if recorder is not None:
                recorder.done()

    return CopyPlan(op, action, title, history, link)


def source_tree(solver: Solver, node: ins.Instruction, from_value: str | None,
                 image: ImageState) -> tuple[str, Callable[[], Any], str | None]:
    """(label, a context manager giving the SourceTree, the key of the source's identity)."""
    from .context import DirTree

    if from_value is None:
        ctx = solver.context

        @contextlib.contextmanager
        def context_tree() -> Iterator[Any]:
            yield ctx

        return "context", context_tree, None

    result = solver.stage_result(from_value)
    if result is not None and result.fs.unknown:
        return "unknown", contextlib.nullcontext, str(result.fs.key.digest)
    if result is not None:
        lowers_fs = result.fs

        @contextlib.contextmanager
        def stage_tree() -> Iterator[Any]:
            lowers = solver.lowers_of(lowers_fs)
            with solver.runner.merged(lowers, None) as root:
                yield DirTree(root, label=f"stage {from_value}", snapshots=lowers)

        return "stage", stage_tree, str(result.fs.key.digest)

    contexts = getattr(solver.bases, "contexts", {})
    nc = contexts.get(from_value.lower())
    if nc is not None and nc.kind == "dir":
        folder = Path(nc.value)

        @contextlib.contextmanager
        def folder_tree() -> Iterator[Any]:
            yield DirTree(folder, label=f"context {from_value}", owner=(0, 0))

        return "folder", folder_tree, f"context:{from_value}"

    kind = "context" if nc is not None else "image"
    # As BuildKit: an image named by --from is an implicit stage of the target platform,
    # whatever platform the stage that reads it is built for.
    base = solver.bases.resolve(from_value, kind=kind, pull=solver.opts.pull,
                                platform=solver.opts.platform)
    from .layerstore import lower_dirs
    from .solve import LayerRef

    layers = [LayerRef(b.diff_id, b) for b in base.layers]

    @contextlib.contextmanager
    def image_tree() -> Iterator[Any]:
        lowers = lower_dirs(solver.store, layers)
        with solver.runner.merged(lowers, None) as root:
            yield DirTree(root, label=f"image {from_value}", snapshots=lowers)

    return "image", image_tree, str(base.key.digest)


def _git_commit(src: str) -> str:
    """The commit a git source names now: its key, so a moved branch re-runs the step (an
    abbreviated commit, which only a fetch resolves, keys by itself)."""
    from .gitsource import parse_git_ref, resolve_commit

    parsed = parse_git_ref(src)
    commit, ref = resolve_commit(parsed)
    return commit or ref


def _url_identity(url: str) -> str:
    """Without --checksum, a URL's key is what the server says identifies its content
    (ETag, Last-Modified, length); failing that, the content's own digest."""
    import hashlib

    import requests

    try:
        resp = requests.head(url, allow_redirects=True, timeout=30)
        tags = [resp.headers.get(h, "") for h in ("ETag", "Last-Modified", "Content-Length")]
        # Without Last-Modified the file's time is 0 (it was the download time before).
        undated = "" if tags[1] else "|mtime0"
        if resp.ok and (tags[0] or tags[1]):
            return "head:" + "|".join(tags) + undated
        h = hashlib.sha256()
        with requests.get(url, stream=True, timeout=60) as got:
            if got.status_code != 200:  # BuildKit's http source words it so
                raise BuildError(f"failed to load cache key: invalid response status "
                                 f"{got.status_code}")
            for chunk in got.iter_content(1 << 20):
                h.update(chunk)
            undated = "" if got.headers.get("Last-Modified") else "|mtime0"
        return "sha256:" + h.hexdigest() + undated
    except requests.RequestException as exc:
        raise BuildError(f"failed to fetch {url}: {exc}") from None
