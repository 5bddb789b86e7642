"""One build, end to end: read the Dockerfile, make the graph, solve it, write the outputs.

This is the public entry point behind `pybuild build` (``run_build``); every step it
takes is a call into the module that owns it.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from .buildflags import Annotations
from .digest import Digest
from .errors import BuildError, ContextError, UsageError
from .progress import Progress
from .warm import write_text

__all__ = ["BuildRequest", "BuildResult", "run_build"]


@dataclass(frozen=True)
class BuildRequest:
    """Everything `pybuild build` was asked for, flags already parsed."""

    context: str = "."
    dockerfile: str | None = None
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None  # --platform, normalised (linux/arm64); None: this machine's
    platforms: tuple[str, ...] = ()  # --platform A,B: several, built in turn into one index
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "default"
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    ssh: Mapping[str, str] = field(default_factory=dict)  # id -> agent socket (--ssh)
    outputs: tuple[Mapping[str, str], ...] = ()
    iidfile: str | None = None
    metadata_file: str | None = None
    progress: str = "auto"
    build_contexts: Mapping[str, str] = field(default_factory=dict)
    # named contexts fetched from a URL (builder.remotecontext.RemoteContext), by name; their
    # build_contexts entries are the folders they were fetched to
    named_remotes: Mapping[str, Any] = field(default_factory=dict)
    root: str | None = None
    compression: str = "gzip"
    compression_level: int | None = None
    source_date_epoch: int | None = None
    insecure_registries: tuple[str, ...] = ()
    memory: int | None = None
    cpus: float | None = None
    jobs: int = 0
    explain: bool = False  # say why each step that missed the cache missed
    dry_run: bool = False  # `pybuild plan`: run nothing, say what would be cached or run
    cache_from: tuple[Mapping[str, str], ...] = ()  # --cache-from type=registry,ref=... | type=local,src=...
    cache_to: tuple[Mapping[str, str], ...] = ()  # --cache-to type=registry,ref=...,mode=... | type=local,dest=...
    debug: bool = False  # --debug: the build checks' summary expanded
    allow: tuple[str, ...] = ()  # --allow: entitlements granted (security.insecure, network.host)
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host: (host, ip) lines of RUN's /etc/hosts
    shm_size: int | None = None  # --shm-size: bytes of RUN's /dev/shm (None: the default 64m)
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: (name, soft, hard) for RUN steps
    annotations: Annotations = field(default_factory=Annotations)  # --annotation, by where they go
    provenance: Any = None  # provenance.ProvenanceOptions: --provenance/--attest asked for one


@dataclass(frozen=True)
class BuildResult:
    """What a build made: the image, its summary line, steps and metadata."""

    image_id: Digest
    manifest_digest: Digest
    summary: str
    steps: tuple[Any, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _read_dockerfile(req: BuildRequest, context_dir: Path | None) -> tuple[str | bytes, str, Path | None]:
    """The Dockerfile's text, the name errors use, and its path (None for stdin)."""
    if req.dockerfile == "-":
        return sys.stdin.buffer.read(), "Dockerfile", None
    if req.dockerfile:
        path = Path(req.dockerfile)
        if req.context == "-" and context_dir is not None:
            # the context came as a tar on stdin: -f names a file inside it, as in docker
            path = context_dir / req.dockerfile.lstrip("/")
        elif not path.is_absolute() and not path.exists() and context_dir is not None:
            path = context_dir / req.dockerfile
    else:
        if context_dir is None:
            raise UsageError("with the context read from stdin, name the Dockerfile with -f")
        path = context_dir / "Dockerfile"
        if not path.exists() and (context_dir / "dockerfile").exists():
            path = context_dir / "dockerfile"
    try:
        return path.read_bytes(), path.name, path
    except FileNotFoundError:
        raise UsageError(f"failed to read the Dockerfile: {path} not found",
                         hint="name another one with -f") from None
    except IsADirectoryError:
        raise UsageError(f"failed to read the Dockerfile: {path} is a folder") from None


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


class _Rejoined(io.RawIOBase):
    """A stream whose first bytes were already read to sniff it: those, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def _read_head(stream: BinaryIO, size: int) -> bytes:
    chunks, have = [], 0
    while have < size:
        data = stream.read(size - have)
        if not data:
            break
        chunks.append(data)
        have += len(data)
    return b"".join(chunks)


def _is_archive(head: bytes) -> bool:
    """docker's test for `docker build -`: a compressed stream, or a valid tar header."""
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    if len(head) < 512:
        return False
    import tarfile  # a context on stdin only

    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _context_from_stdin(store_tmp: Path) -> tuple[Path, bytes | None]:
    """`pybuild build -`: a tar on stdin is the context, unpacked safely into a temp folder;
    anything else is the Dockerfile itself, with an empty context (as docker reads it)."""
    import tarfile
    import tempfile

    store_tmp.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="stdin-context-", dir=store_tmp))
    stdin = sys.stdin.buffer
    head = _read_head(stdin, 512)
    if not _is_archive(head):
        return dest, head + stdin.read()
    try:
        with tarfile.open(fileobj=io.BufferedReader(_Rejoined(head, stdin)), mode="r|*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        _remove(dest)
        raise ContextError(f"the context on stdin is not a valid tar archive: {exc}") from None
    return dest, None


def _remove(path: Path) -> None:
    from .cache.store import remove_tree

    remove_tree(path)


def run_build(req: BuildRequest) -> BuildResult:
    started = time.monotonic()
    progress = Progress(req.progress)
    progress.debug = req.debug
    try:
        return _run_build(req, progress, started)
    finally:
        progress.finish()  # ends the display; sums up the build checks' findings


def _run_build(req: BuildRequest, progress: Progress, started: float) -> BuildResult:
    from .base import is_url_context, parse_named_contexts
    from .cache.store import Store, default_root

    store = Store(Path(req.root) if req.root else default_root())
    recorder = _start_recording(req, store, progress)
    if not any(is_url_context(v) for v in req.build_contexts.values()):
        return _run_build_from(req, store, progress, started, recorder)
    from .remotecontext import open_named_contexts

    parse_named_contexts(req.build_contexts)  # all checked before any fetch
    # named contexts given as URLs: fetched first, then each is the folder it was fetched to
    with open_named_contexts(req.build_contexts, store.root / "tmp",
                             progress=progress) as (folders, remotes):
        return _run_build_from(replace(req, build_contexts=folders, named_remotes=remotes), store,
                               progress, started, recorder)


def _run_build_from(req: BuildRequest, store: Any, progress: Progress, started: float,
                    recorder: Any) -> BuildResult:
    # a folder (the common case) is told apart without loading the remote-context code
    if req.context != "-" and not os.path.isdir(req.context) and _remote_context(req.context):
        from .base import parse_named_contexts
        from .remotecontext import for_remote, open_remote

        parse_named_contexts(req.build_contexts)  # refused before the fetch, not after it

        with open_remote(req.context, store.root / "tmp", build_args=req.build_args,
                         progress=progress, source_date_epoch=req.source_date_epoch) as remote:
            return _build(for_remote(req, remote), store, progress, remote.root, None, started, None,
                          remote=remote)
    if req.context == "-":
        if req.dockerfile == "-":
            raise UsageError("the build context and the Dockerfile cannot both come from stdin")
        context_dir, stdin_dockerfile = _context_from_stdin(store.root / "tmp")
        try:
            return _build(req, store, progress, context_dir, stdin_dockerfile, started, None)
        finally:
            _remove(context_dir)
    else:
        context_dir = Path(req.context).resolve()
        if not context_dir.is_dir():
            raise ContextError(f"the build context {req.context} is not a folder",
                               hint="give the folder holding the Dockerfile, e.g. `pybuild .`")
    return _build(req, store, progress, context_dir, None, started, recorder)


def _remote_context(arg: str) -> bool:
    from .remotecontext import is_remote

    return is_remote(arg)


def _build(req: BuildRequest, store: Any, progress: Progress, context_dir: Path,
           stdin_dockerfile: bytes | None, started: float, recorder: Any, *,
           remote: Any = None) -> BuildResult:
    from .base import parse_named_contexts
    from .parse import parse_dockerfile

    if stdin_dockerfile is not None:
        text, name, df_path = stdin_dockerfile, "Dockerfile", None
    else:
        text, name, df_path = _read_dockerfile(req, context_dir)
    if not text:  # as BuildKit's converter; a file of blanks and comments is the parser's
        raise ContextError("the Dockerfile cannot be empty", hint=f"{name} is an empty file")
    dockerfile = parse_dockerfile(text, filename=name)
    progress.source = (dockerfile.lines, name)
    contexts = parse_named_contexts(req.build_contexts)
    _check_request(req, progress)
    attester = None
    if req.provenance is not None:
        from .attest import Attester

        attester = Attester(req.provenance, req, store=store, dockerfile_name=name,
                            dockerfile=text if isinstance(text, bytes) else text.encode(),
                            started=time.time() - (time.monotonic() - started), remote=remote)
    if req.platforms:
        return _build_platforms(req, store, progress, dockerfile, name, df_path, contexts,
                                context_dir, started, attester, remote=remote)
    _, solver, result = _solve(req, store, progress, dockerfile, name, df_path, contexts,
                               context_dir, remote=remote)
    bases = solver.bases
    if req.dry_run or req.explain:
        return_plan = _explained(req, solver, result, started)
        if return_plan is not None:
            return return_plan

    from .export import make_image, write_outputs

    # Each output gets the media types of its kind (an OCI archive OCI ones, a docker
    # archive docker ones); the first output's image is the one the metadata describes.
    # What leaves the store (an archive, a push) gets --compression; the local store keeps
    # the layers as the steps made them (uncompressed tars, base layers as they came) and
    # compresses when pushing, as docker's own store does. The image ID is the same.
    images: dict[tuple[str, str], Any] = {}

    def image_for(media: str, compression: str | None = None) -> Any:
        comp = compression or req.compression
        if (media, comp) not in images:
            images[media, comp] = make_image(store, result, compression=comp,
                                             level=req.compression_level,
                                             source_date_epoch=req.source_date_epoch, media=media,
                                             annotations=req.annotations.manifest, platform=req.platform)
        return images[media, comp]

    def media_of(out: Mapping[str, str]) -> str:
        return "docker" if out.get("type") == "docker" else "oci"

    stored = "uncompressed"
    image = image_for(media_of(req.outputs[0])) if req.outputs else image_for("oci", stored)
    indexes: list[Any] = []  # with --provenance: the index each output got, in order

    def index_for(out: Mapping[str, str]) -> Any:
        index = attester.index([(solver, image_for("oci"))], _names(req, out),  # type: ignore[union-attr]
                               entries=req.annotations.entries([(req.platform, image_for("oci"))]))
        indexes.append(index)
        return index

    for out in req.outputs:
        if attester is not None and out.get("type") == "oci":
            from .attest import write_oci  # only with --provenance: a plain build never loads it

            write_oci(out, index_for(out), image_for("oci"), req, _names(req, out))
            continue
        write_outputs(store, image_for(media_of(out)), result, [out], tags=req.tags,
                      source_date_epoch=req.source_date_epoch, lowers_of=solver.lowers_of,
                      descriptor_annotations=req.annotations.descriptor,
                      provenance=attester.file_writer(solver, image_for(media_of(out)))
                      if attester is not None else None)
    from .images import ImageStore

    if not req.outputs or any(o.get("type") in ("image", "registry") for o in req.outputs):
        ImageStore(store).keep(req.tags, image_for("oci", stored))  # no -t: kept dangling
    for out in req.outputs:
        if out.get("type") == "registry" or (out.get("type") == "image" and out.get("push") == "true"):
            if attester is not None:
                _push_index(store, req, index_for(out), out, progress)
                continue
            _push(store, req, image_for("docker" if out.get("oci-mediatypes") == "false" else "oci"),
                  out, progress)

    if req.cache_to:
        from .cache.remote import export_cache

        export_cache(store, solver, req.cache_to, insecure=req.insecure_registries, progress=progress)
    image_id = image.config_digest
    steps = tuple(solver.steps)
    if indexes:  # BuildKit's image exporter then names the index alone, and so does buildx
        from .oci.types import MediaType

        image_id = indexes[0].manifest_digest
        metadata = {"containerimage.digest": str(image_id),
                    **_described(req, MediaType.OCI_INDEX, indexes[0].manifest_bytes, steps, remote)}
    else:
        metadata = {
            "containerimage.digest": str(image.manifest_digest),
            "containerimage.config.digest": str(image_id),
            **_described(req, image.manifest.media_type, image.manifest_bytes, steps, remote),
        }
    if req.iidfile:
        write_text(req.iidfile, str(image_id))
    if req.metadata_file:
        write_text(req.metadata_file, json.dumps(metadata, indent=2) + "\n")
    elapsed = time.monotonic() - started
    cached = sum(1 for s in steps if s.cached)
    shown = req.tags[0] if req.tags else "image"
    summary = f"built {shown} {image_id} in {elapsed:.1f}s ({cached}/{len(steps)} steps cached)"
    if recorder is not None and not req.outputs and not bases.fetched and not _fetches(dockerfile):
        _record(recorder, store, solver, bases, image, req, shown, metadata)
    return BuildResult(image_id, image.manifest_digest, summary, steps, metadata)


_NO_INDEX = "docker exporter does not currently support exporting manifest lists"


def _names(req: BuildRequest, out: Mapping[str, str]) -> list[str]:
    """The names an output gives the image: its name= or the -t tags."""
    return [n for n in out.get("name", "").split(",") if n] or list(req.tags)


def _build_platforms(req: BuildRequest, store: Any, progress: Progress, dockerfile: Any, name: str,
                     df_path: Any, contexts: Any, context_dir: Path, started: float,
                     attester: Any = None, *, remote: Any = None) -> BuildResult:
    """--platform A,B: the target built for each platform in turn, the images joined in one
    OCI image index, which the outputs and pushes get (each platform's files in its own
    folder for a local or tar output), as BuildKit does. Neither a docker archive nor the
    local store holds an index: asking for one is refused before anything runs."""
    from .export import make_image, platform_folder, write_index_outputs
    from .oci.image import IndexSpec

    pushing = [o for o in req.outputs if o.get("type") == "registry"
               or (o.get("type") == "image" and o.get("push") == "true")]
    for out in req.outputs:
        if out.get("type") == "docker" or out.get("oci-mediatypes") == "false":
            raise UsageError(_NO_INDEX, hint="write an OCI archive (-o type=oci,dest=FILE) or push")
        if out.get("type") == "image" and out.get("push") != "true":
            raise UsageError(f"{_NO_INDEX}: the local store keeps one platform per name",
                             hint="push the index (--push), or write -o type=oci,dest=FILE")
    if req.tags and not req.outputs:
        raise UsageError(f"{_NO_INDEX}: the local store keeps one platform per name",
                         hint="push the index (--push), or write -o type=oci,dest=FILE")
    if req.dry_run or req.explain:
        raise UsageError("plan and --explain take one platform at a time")
    folders = [platform_folder(p) for p in req.platforms]
    for i, folder in enumerate(folders):
        if folder in folders[:i]:
            raise UsageError(f"--platform names {req.platforms[i]} twice")

    def solve_one(i: int, register: Any) -> tuple[Any, Any]:
        one = replace(req, platform=req.platforms[i], platforms=(), cache_to=())
        _, solver, result = _solve(one, store, progress, dockerfile, name, df_path, contexts,
                                   context_dir, checks=i == 0, show_platform=True, remote=remote,
                                   on_solver=register)
        return solver, result

    parts = []
    steps: list[Any] = []
    solvers = []
    for platform, (solver, result) in zip(req.platforms, _each_platform(len(req.platforms), solve_one, req.jobs)):
        solvers.append(solver)
        image = make_image(store, result, compression=req.compression, level=req.compression_level,
                           source_date_epoch=req.source_date_epoch, media="oci",
                           annotations=req.annotations.for_manifest(platform), platform=platform)
        parts.append((platform, image, result))
        steps.extend(solver.steps)
    entries = req.annotations.entries([(p, image) for p, image, _ in parts])
    index = IndexSpec.of((image for _, image, _ in parts), req.annotations.index, entries=entries)
    files = {}
    if attester is not None:
        # one attestation per platform image, its subjects named as the output names the
        # index: each output that holds the index gets its own (as BuildKit's exporters)
        attested = [(solver, image) for solver, (_, image, _) in zip(solvers, parts)]
        files = {p: attester.file_writer(s, i) for s, (p, i, _) in zip(solvers, parts)}
        made = [attester.index(attested, _names(req, o), entries=entries) for o in req.outputs
                if o.get("type") == "oci" or o in pushing]
        index = made[0] if made else attester.index(attested, list(req.tags), entries=entries)
    store.put_blob_bytes(index.manifest_bytes)
    for out in req.outputs:
        one = attester.index(attested, _names(req, out), entries=entries) \
            if attester is not None and out.get("type") == "oci" else index
        write_index_outputs(store, one, parts, [out], tags=req.tags,
                            source_date_epoch=req.source_date_epoch,
                            descriptor_annotations=req.annotations.index_descriptor,
                            provenance=files)
    for out in pushing:
        one = attester.index(attested, _names(req, out), entries=entries) \
            if attester is not None else index
        _push_index(store, req, one, out, progress)
    if req.cache_to:  # one cache for every platform's steps, as BuildKit exports it
        from types import SimpleNamespace

        from .cache.remote import export_cache

        joined = SimpleNamespace(graph=solvers[0].graph, steps=steps,
                                 cache_mount_ids=set().union(*(s.cache_mount_ids for s in solvers)))
        export_cache(store, joined, req.cache_to, insecure=req.insecure_registries, progress=progress)
    digest = index.manifest_digest
    if req.iidfile:
        write_text(req.iidfile, str(digest))
    metadata = {
        "containerimage.digest": str(digest),
        "pybuild.platforms": {p: {"containerimage.digest": str(image.manifest_digest),
                                  "containerimage.config.digest": str(image.config_digest)}
                              for p, image, _ in parts},
        **_described(req, index.manifest_descriptor().media_type, index.manifest_bytes, steps,
                     remote),
    }
    if req.metadata_file:
        write_text(req.metadata_file, json.dumps(metadata, indent=2) + "\n")
    cached = sum(1 for s in steps if s.cached)
    shown = req.tags[0] if req.tags else "image index"
    summary = (f"built {shown} {digest} for {', '.join(req.platforms)} in "
               f"{time.monotonic() - started:.1f}s ({cached}/{len(steps)} steps cached)")
    return BuildResult(digest, digest, summary, tuple(steps), metadata)


def _each_platform(count: int, solve_one: Any, jobs: int) -> list[tuple[Any, Any]]:
    """``solve_one(i, register)`` for each platform, at once (as BuildKit solves the
    platforms of one build side by side), ``jobs`` at a time (0: one per CPU); the results
    in platform order. ``register(solver)`` is called with each solver before it runs, so
    that a signal to this process, or the failure of one platform, stops them all: the
    first error is the build's."""
    workers = min(count, jobs or os.cpu_count() or 1)
    if workers <= 1:
        return [solve_one(i, lambda _solver: None) for i in range(count)]
    import signal
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    live: list[Any] = []
    stopped: list[int] = []
    guard = threading.RLock()  # a signal may arrive while the main thread holds it

    def register(solver: Any) -> None:
        with guard:
            live.append(solver)
            if stopped:
                solver.interrupt(stopped[0])

    def stop(signum: int, _frame: Any = None) -> None:
        with guard:
            stopped.append(signum)
            for solver in live:
                solver.interrupt(signum)

    isolate_mounts()  # the process's own mount namespace, entered before any thread starts
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    first: BaseException | None = None
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(solve_one, i, register) for i in range(count)]
            for fut in as_completed(futures):
                if fut.exception() is not None and first is None:
                    first = fut.exception()
                    if not stopped:
                        stop(signal.SIGTERM)  # the other platforms end their steps
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if first is not None:
        raise first
    return [fut.result() for fut in futures]


def _described(req: BuildRequest, media_type: str, manifest: bytes, steps: Sequence[Any],
               remote: Any = None) -> dict[str, Any]:
    """The metadata file's description of what was made (a manifest or an index) and how
    (and, for a remote context, where it came from)."""
    from .digest import sha256_bytes

    return {
        **({"pybuild.context": remote.metadata()} if remote is not None else {}),
        "containerimage.descriptor": {
            "mediaType": media_type, "digest": str(sha256_bytes(manifest)), "size": len(manifest),
            **({"annotations": dict(ann)} if (ann := _descriptor_annotations(req, media_type)) else {})},
        "image.name": ",".join(req.tags),
        "pybuild.steps": [
            {"stage": s.stage, "instruction": s.instruction, "line": s.line, "key": s.key,
             "cached": s.cached, "duration": s.seconds, "layer": s.layer, "size": s.size}
            for s in steps],
    }


def _push_index(store: Any, req: BuildRequest, index: Any, out: Mapping[str, str],
                progress: Progress) -> None:
    """Push each platform's image by digest, then the index under every name."""
    from .images import ImageStore, push_stored
    from .oci.registry import Registry
    from .oci.types import MediaType
    from .reference import ImageRef

    names = _names(req, out)
    refs = [ImageRef.parse(ImageStore.normalize(n)) for n in names]
    sid = progress.start(f"[internal] pushing {', '.join(names)}")
    try:
        for image in index.images:
            by_digest = sorted({f"{ref.name}@{image.manifest_digest}" for ref in refs})
            push_stored(store, by_digest[0], by_digest, insecure=req.insecure_registries,
                        image=image, report=progress.info, as_is=True)
        for ref in refs:
            registry = Registry(ref.api_host, insecure_registries=req.insecure_registries)
            registry.put_manifest(ref, ref.tag or str(index.manifest_digest), index.manifest_bytes,
                                  MediaType.OCI_INDEX)
            progress.info(f"pushed {ref}@{index.manifest_digest}")
    except BuildError as exc:
        progress.error(sid, str(exc))
        raise
    progress.internal_done(sid)


def _descriptor_annotations(req: BuildRequest, media_type: str) -> Mapping[str, str]:
    """The annotations of the descriptor of what a build made: an index's or a manifest's."""
    from .oci.types import MediaType

    return req.annotations.index_descriptor if media_type == MediaType.OCI_INDEX \
        else req.annotations.descriptor


def _check_request(req: BuildRequest, progress: Progress) -> None:
    """What can be refused before any step runs: -t names, outputs, annotations."""
    from .export import check_outputs
    from .images import ImageStore

    for tag in req.tags:
        ImageStore.normalize(tag)  # a bad -t fails now, not after the whole build
    check_outputs(req.outputs)
    if req.provenance is not None:
        from .attest import check_outputs as check_attested

        check_attested(req, progress)
    for out in req.outputs:
        if (req.annotations.manifest or req.annotations.descriptor) and _docker_media(out):
            progress.warn(f"--annotation: the {out.get('type')} output uses docker media types, "
                          "which carry no annotations; they are left out of it")


def _solve(req: BuildRequest, store: Any, progress: Progress, dockerfile: Any, name: str,
           df_path: Any, contexts: Any, context_dir: Path, *, checks: bool = True,
           show_platform: bool = False, remote: Any = None,
           on_solver: Any = None) -> tuple[Any, Any, Any]:
    """Build the target stage for ``req.platform``: (graph, solver, the stage's result).
    ``checks``: run the build checks first (once per build, not once per platform);
    ``on_solver``: told of the solver before it runs (``_each_platform``)."""
    from .base import BaseResolver
    from .cache.history import Explainer
    from .context import BuildContext
    from .graph import build_graph
    from .solve import Solver
    from .steps import StepRunner

    graph = build_graph(dockerfile, build_args=req.build_args, target=req.target,
                        platform=req.platform, named_contexts=list(contexts))
    if checks:
        for warning in graph.warnings:
            progress.warn(warning)
    isolate_mounts()
    context = BuildContext.open(context_dir, df_path, remote=remote is not None)
    opts = _solver_options(req, context_dir=context_dir, dockerfile_name=name,
                           show_platform=show_platform)
    bases = BaseResolver(store, progress=progress, insecure=req.insecure_registries,
                         contexts=contexts, context_root=context_dir)
    runner = StepRunner(store.root, secrets=dict(req.secrets), ssh=dict(req.ssh),
                        warn=progress.warn)
    solver = Solver(graph, dockerfile, opts, store=store, context=context, progress=progress,
                    bases=bases, runner=runner)
    solver.explainer = Explainer(store, context=context, enabled=req.explain or req.dry_run)
    if on_solver is not None:
        on_solver(solver)
    if req.cache_from and not req.dry_run:
        from .cache.remote import open_imports

        solver.cache_import = open_imports(store, req.cache_from, insecure=req.insecure_registries,
                                           progress=progress)
    try:
        if checks:
            # The build checks, before any step: the stages the target needs, with their
            # bases' configs (resolved here, once, for the build too)
            from .buildcheck import check, violation

            linter = check(req, dockerfile, graph, progress.check, reached=graph.order,
                           ignore=context.ignore,
                           base_config=lambda stage: solver.base_of(stage).config)
            failed = violation(linter, dockerfile)
            if failed is not None:
                raise failed
        result = solver.solve()
    finally:
        runner.close()
    return graph, solver, result


def _docker_media(out: Mapping[str, str]) -> bool:
    """Whether an output gets a docker manifest (no annotations field) or none at all."""
    return out.get("type") == "docker" or out.get("oci-mediatypes") == "false"


def _push(store: Any, req: BuildRequest, image: Any, out: Mapping[str, str], progress: Progress) -> None:
    """`--push` / `-o type=registry`: the image under every -t name (or the output's name=)."""
    from .images import push_stored

    names = _names(req, out)
    sid = progress.start(f"[internal] pushing {', '.join(names)}")
    try:
        results = push_stored(store, names[0], names, insecure=req.insecure_registries, image=image,
                              report=progress.info)
    except BuildError as exc:
        progress.error(sid, str(exc))
        raise
    progress.internal_done(sid)
    for result in results:
        for name in result.names:
            progress.info(f"pushed {name}@{result.digest}")


def _explained(req: BuildRequest, solver: Any, result: Any, started: float) -> BuildResult | None:
    """--explain: print why steps missed; plan (dry run): the result is the plan itself
    (the final step's key stands for the image, which is not made)."""
    verdicts = solver.explainer.verdicts
    lines = [v.line("WOULD RUN" if req.dry_run else "RAN") for v in verdicts if req.dry_run or not v.cached]
    if not req.dry_run:
        for line in lines:
            sys.stderr.write(f"explain: {line}\n")
        return None
    key = result.fs.key.digest
    would = sum(1 for v in verdicts if not v.cached)
    summary = (f"plan: {len(verdicts) - would}/{len(verdicts)} steps cached, {would} would run "
               f"({time.monotonic() - started:.1f}s)")
    return BuildResult(key, key, summary, tuple(solver.steps), {"pybuild.plan": lines})


def _solver_options(req: BuildRequest, **extra: Any) -> Any:
    """The solver's options: every field it shares with the request, taken from it (so an
    option added to both reaches the solver without a third list), plus ``extra``."""
    from dataclasses import fields

    from .solve import BuildOptions

    shared = {f.name for f in fields(BuildOptions)} & {f.name for f in fields(BuildRequest)}
    return BuildOptions(**{name: getattr(req, name) for name in shared}, **extra)


def _start_recording(req: BuildRequest, store: Any, progress: Progress) -> Any:
    """When the command line stamped this build for a replay (``builder.warm``): the
    recorder that keeps its events, so that its result can be remembered."""
    from . import warm

    token = warm.pending()
    warm.clear_pending()  # one build per stamp
    if token is None or req.context == "-" or token["root"] != os.path.abspath(store.root) \
            or token["context"] != str(Path(req.context).resolve()):
        return None
    recorder = warm.Recorder(token)
    progress.journal = recorder.events
    return recorder


def _fetches(dockerfile: Any) -> bool:
    """Whether the build reads anything a replay could not see change: ADD of a URL or a
    git repository (or of a variable, which may expand to one), ONBUILD triggers (a base
    image's count as fetched, ``BaseResolver``)."""
    from . import instructions as ins

    for node in dockerfile.instructions:
        if isinstance(node, ins.Add) and any(c in src for src in node.sources for c in ":@$"):
            return True
        if isinstance(node, ins.Onbuild):
            return True
    return False


def _record(recorder: Any, store: Any, solver: Any, bases: Any, image: Any, req: BuildRequest,
            shown: str, metadata: Mapping[str, Any]) -> None:
    """Remember a build for ``builder.warm.replay``: every store file it relied on, and what
    the same build shows next time (its steps then all cache hits)."""
    from .images import ImageStore

    watch = recorder.watch
    for step in solver.steps:
        watch.append(str(store.record_path(Digest.parse(step.key))))
        if step.layer:  # what a cache hit needs (Solver._record_usable)
            watch.append(str(store.snapshot_path(Digest.parse(step.diff_id))))
            if step.layer != step.diff_id:  # a plain layer may be kept as its snapshot only
                watch.append(str(store.blob_path(Digest.parse(step.layer))))
    watch.extend(str(path) for path in bases.watch)
    for name, manifest in bases.refs_read:
        watch.append(str(store.ref_path(name)))
        watch.append(str(store.blob_path(manifest)))
    for digest in (image.manifest_digest, image.config_digest):
        watch.append(str(store.blob_path(digest)))
    for digest in (d.digest for d in image.layers):
        # a step's plain layer kept as its snapshot only: that snapshot is what must stay
        path = store.blob_path(digest)
        watch.append(str(path if path.is_file() else store.snapshot_path(digest)))
    for ref in ImageStore(store).refs_of(req.tags, image):
        watch.append(str(store.ref_path(ref)))
    # What the next identical build shows: every step a cache hit, found at once.
    cached_meta = dict(metadata)
    cached_meta["pybuild.steps"] = [{**s, "cached": True, "duration": 0.0}
                                    for s in metadata["pybuild.steps"]]
    recorder.commit(steps=[Digest.parse(s.key).hex for s in solver.steps],
                    image_id=str(image.config_digest), shown=shown, metadata=cached_meta)


def isolate_mounts() -> None:
    """Mounts made for COPY and RUN live in a mount namespace of their own, so they vanish
    with the process whatever happens to it. Without root, the process first becomes root
    of a user namespace of its own (as ``buildah unshare``), so that it may mount at all."""
    import threading

    if os.geteuid() != 0:
        if threading.active_count() > 1:
            return  # too late (a threaded caller): RUN steps still make their own namespaces
        from .executor import enter_user_namespace

        enter_user_namespace()  # a refusal ends the build here, saying what to allow
        return
    try:
        from .executor import enter_private_mount_namespace

        enter_private_mount_namespace()
    except (ImportError, BuildError, OSError):
        pass
