"""Walks the build graph: keys each step, reuses what the cache holds, runs the rest.

A stage is a chain of filesystem states (``FsState``: a cache key and the layers so
far) and an image config (``ImageState``). Metadata instructions change only the
config; WORKDIR, COPY, ADD and RUN make a new layer: the step runs on an overlay of the
layers below with a fresh upper directory, and that upper directory, once the step is
done, becomes the layer's snapshot (it is already in overlay form, so it can serve as a
lower directory for the next step without being unpacked again).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import instructions as ins
from .base import BaseImage, BaseResolver
from .cache.keys import CacheKey, base_key, step_key
from .cache.store import LayerBlob, Store, remove_tree
from .config import DEFAULT_PATH, HistoryEntry, ImageState
from .digest import Digest
from .dispatch import (
    METADATA,
    StageEnv,
    apply_metadata,
    normalize_workdir,
    run_argv,
    run_history_text,
)
from .errors import BuildError, ExecError
from .executor.spec import StepInterrupted
from .expand import expand_shown
from .graph import BuildGraph, Stage, platform_args, proxy_env
from .layerstore import commit_layer, ensure_snapshot, lower_dirs
from .progress import Progress
from .stepnames import cross_arrow, shown_base, shown_run, steps_of
from .steps import StepRunner

__all__ = ["BuildOptions", "FsState", "LayerRef", "Solver", "StageResult",
           "format_time"]


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC with trailing zeros of the fraction trimmed, as Go writes times.
    (time.gmtime, not datetime: datetime's import is 2 ms of every build's start.) The
    fraction is rounded to microseconds half to even, as datetime.fromtimestamp rounds it."""
    frac, whole = math.modf(seconds)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    digits = f"{micro:06d}".rstrip("0")
    return text + (f".{digits}" if digits else "") + "Z"


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """The settings of one solve that come from the command line."""

    context_dir: Path
    dockerfile_name: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None  # the target platform (--platform); None: this machine's
    show_platform: bool = False  # one of several platforms: step names say which
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "default"
    build_contexts: Mapping[str, str] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    source_date_epoch: int | None = None
    memory: int | None = None
    cpus: float | None = None
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # id -> (kind, value)
    ssh: Mapping[str, str] = field(default_factory=dict)  # id -> agent socket to forward
    jobs: int = 0
    dry_run: bool = False  # `pybuild plan`: key and look up every step, run none
    allow: tuple[str, ...] = ()  # entitlements granted: RUN --security=insecure needs one
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host: (host, ip) for RUN's /etc/hosts
    shm_size: int | None = None  # --shm-size: bytes of RUN's /dev/shm
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: (name, soft, hard) for RUN steps


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer of a stage's file system, by diff_id."""

    diff_id: Digest
    blob: LayerBlob | None = None  # the known compressed form (pulled, or made by a step)


@dataclass(frozen=True, slots=True)
class FsState:
    """A stage's file system after a step: its cache key and layers."""

    key: CacheKey
    layers: tuple[LayerRef, ...] = ()
    # `pybuild plan` only: a step below would run, so ``layers`` lack what it would write
    # and the files here are not known (a COPY --from this state cannot hash them).
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one step did, as the metadata file reports it."""

    stage: str
    instruction: str
    line: int
    key: str
    cached: bool
    seconds: float
    layer: str | None = None
    size: int | None = None
    diff_id: str | None = None


@dataclass(frozen=True, slots=True)
class StageResult:
    """A stage built: its file system, image state and base."""

    stage: Stage
    fs: FsState
    image: ImageState
    base: BaseImage | None
    platform: str | None = None  # what the stage was built for; None: this machine


class Solver:
    def __init__(
        self,
        graph: BuildGraph,
        dockerfile: ins.Dockerfile,
        options: BuildOptions,
        *,
        store: Store,
        context: Any,
        progress: Progress,
        bases: BaseResolver,
        runner: StepRunner,
    ) -> None:
        self.graph = graph
        self.dockerfile = dockerfile
        self.opts = options
        self.store = store
        self.context = context
        self.progress = progress
        self.bases = bases
        self.runner = runner
        self.results: dict[int, StageResult] = {}
        self._run_platform: dict[int, str | None] = {}  # per stage: what its RUN steps run for
        self._host_platform = platform_args()["BUILDPLATFORM"]
        self._stage_locks: dict[int, threading.Lock] = {}  # one per stage: built once
        self.steps: list[StepReport] = []
        self._no_cache_stages = {s.lower() for s in options.no_cache_filter}
        self._interrupted: int | None = None  # the signal that asked the build to stop
        self.explainer: Any = None  # cache.history.Explainer: remembers positions, says why steps miss
        self._running: dict[int, CacheKey] = {}  # progress id of a step being run -> its key
        self.cache_import: Any = None  # cache.remote.CacheImport: the records --cache-from offers
        self.cache_mount_ids: set[str] = set()  # RUN --mount=type=cache ids seen (--cache-to mounts=true)
        self._bases: dict[int, BaseImage] = {}  # stage index -> its resolved base (base_of)
        self._bases_lock = threading.Lock()
        # stage index -> [steps named so far, steps the stage has]: "[build 2/5] RUN ..."
        self._counts: dict[int, list[int]] = {}
        self._counts_lock = threading.Lock()

    def _step_name(self, stage: Stage, title: str, *, first: bool = False) -> str:
        """A step's name on the progress display, as BuildKit's prefixCommand makes it: the
        stage (its name, else stage-N; nothing when the Dockerfile has one stage and reads no
        image with --from), then this step's number among the stage's and their count."""
        with self._counts_lock:
            count = self._counts.setdefault(stage.index, [0, steps_of(stage)])
            count[0] += 1
            number, total = count
        if total == 0:
            return title
        single = len(self.graph.stages) == 1 and not stage.external
        label = "" if single else f"{stage.display_name} "
        if self.opts.show_platform:  # several platforms: BuildKit names each step's
            platform = self._run_platform.get(stage.index) or self.platform_of(stage) or self._host_platform
            label = f"{platform}{'' if first else cross_arrow(stage, platform, self.opts.platform)} {label}"
        return f"[{label}{number:>{len(str(total))}}/{total}] {title}"

    def _count_triggers(self, stage: Stage, triggers: int) -> None:
        """A base image's ONBUILD triggers join the stage's steps (BuildKit adds them to the
        count once it has read the image, after naming the FROM step)."""
        with self._counts_lock:
            self._counts.setdefault(stage.index, [0, steps_of(stage)])[1] += triggers

    # -- the graph ------------------------------------------------------------------
    def solve(self) -> StageResult:
        with self._signals_end_steps():
            result = self._solve()
            if self._interrupted is not None:
                raise StepInterrupted(self._interrupted)
            return result

    @contextlib.contextmanager
    def _signals_end_steps(self) -> Iterator[None]:
        """SIGINT/SIGTERM while the build runs: end the running steps (each raises
        StepInterrupted and cleans up after itself) and start no new one, rather than
        dying with temp dirs left (stages run in threads never see a signal themselves).
        A step running in the main thread handles the signal itself meanwhile."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            self.interrupt(signum)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def interrupt(self, signum: int) -> None:
        """Stop the build: end its running steps (each raises StepInterrupted and cleans up
        after itself) and start no new one. Also what another thread calls to stop this
        solver (a sibling platform failed, or the main thread got a signal)."""
        self._interrupted = self._interrupted or signum
        # Steps run processes only once the executor is loaded: nothing to end before.
        run = sys.modules.get("builder.executor.run")
        if run is not None:
            run.interrupt_steps(signum)

    def _solve(self) -> StageResult:
        jobs = self.opts.jobs or (os.cpu_count() or 1)
        for wave in self.graph.layers_of_order():
            if len(wave) == 1 or jobs == 1:
                for index in wave:
                    self._stage_built(index)
            else:
                # imported here: a one-chain build (the common case) never needs threads
                from concurrent.futures import ThreadPoolExecutor, as_completed

                failed: BaseException | None = None
                with ThreadPoolExecutor(max_workers=min(jobs, len(wave))) as pool:
                    futures = [pool.submit(self._stage_built, i) for i in wave]
                    for fut in as_completed(futures):
                        if fut.exception() is not None and failed is None:
                            # the first failure is the build's: the other stages stop
                            # now, as BuildKit cancels the rest of a failed solve
                            failed = fut.exception()
                            self.interrupt(signal.SIGTERM)
                if failed is not None:
                    raise failed
        return self.results[self.graph.target]

    def _stage_built(self, index: int) -> StageResult:
        """The result of a stage, built first if it is not yet (with what it needs): the
        stages the graph orders, and one that only a base image's ONBUILD trigger names."""
        for dep in sorted(self.graph.stage(index).deps):
            if dep < index:  # the graph refused any other before the build began
                self._stage_built(dep)
        # Locks are taken from a later stage to an earlier one only, so they cannot deadlock.
        lock = self._stage_locks.setdefault(index, threading.Lock())
        with lock:
            result = self.results.get(index)
            if result is None:
                stage = self.graph.stage(index)
                if stage.late_ref is not None:
                    message, where = stage.late_ref
                    raise BuildError(message, location=where.range,
                                     source_line=self._source_line(where))
                result = self.results[index] = self.build_stage(stage)
            return result

    def _source_line(self, node: ins.Instruction) -> str:
        return self.dockerfile.source_line(node.range.start)

    def _located(self, exc: BuildError, node: ins.Instruction) -> BuildError:
        if exc.location is None:
            exc.location = node.range
            exc.source_line = self._source_line(node)
        elif exc.source_line is None and exc.location.start == node.range.start:
            exc.source_line = self._source_line(node)
        return exc

    # -- one stage ------------------------------------------------------------------
    def build_stage(self, stage: Stage) -> StageResult:
        base = None
        platform = self.platform_of(stage)
        if stage.base.kind == "stage":
            parent = self.results[stage.base.stage]  # type: ignore[index]
            platform = parent.platform  # as BuildKit: a stage on a stage is for its platform
        self._run_platform[stage.index] = platform
        if stage.base.kind == "stage":
            fs, image = parent.fs, parent.image
            image = image.changed(onbuild=())
            base = parent.base
            onbuild = parent.image.onbuild
        elif stage.base.kind == "scratch" or (stage.base.kind == "context"
                                              and self.bases.is_scratch(stage.base.name)):
            fs, image, onbuild = FsState(base_key(manifest_digest=None)), ImageState(workdir="/"), ()
        else:
            base = self.base_of(stage)
            fs = FsState(base.key, tuple(LayerRef(b.diff_id, b) for b in base.layers))
            image = ImageState.from_config(base.config)
            onbuild = tuple((base.config.get("config") or {}).get("OnBuild") or ())

        if image.get_env("PATH") is None:
            # BuildKit makes sure every image has a PATH.
            image = image.with_env([("PATH", DEFAULT_PATH)])
        if image.arg_env:
            # A stage on a stage: BuildKit adds the config's Env to the parent's environment
            # again, so an ARG value the parent set after an ENV of that name gives way.
            names = {k for k, _ in image.env}
            image = image.changed(arg_env=tuple(p for p in image.arg_env if p[0] not in names))
        if image.workdir:
            # BuildKit sets the base's WorkingDir again as a WORKDIR would (dispatchWorkdir
            # without a commit): a relative one is joined to itself (`a` -> `/a/a`).
            image = image.changed(workdir=normalize_workdir(image.workdir, image.workdir))
        env = StageEnv(escape=self.graph.escape, build_args=self.graph.build_args,
                       global_args=dict(self.graph.global_args))
        nodes: list[ins.Instruction] = []
        for trigger in onbuild:
            nodes.extend(self._parse_trigger(trigger, stage))
        if nodes:
            self._count_triggers(stage, len(nodes))
        if nodes and stage.base.kind != "stage":
            self._build_trigger_sources(stage, nodes)
        nodes.extend(stage.instructions)
        no_cache = self.opts.no_cache or (stage.name or "") in self._no_cache_stages or \
            str(stage.index) in self._no_cache_stages

        for node in nodes:
            try:
                if isinstance(node, METADATA):
                    image = apply_metadata(node, image, env)
                elif isinstance(node, ins.Workdir):
                    fs, image = self._workdir(stage, node, fs, image, env, no_cache)
                elif isinstance(node, ins.Run):
                    fs, image = self._run(stage, node, fs, image, env, no_cache)
                elif isinstance(node, (ins.Copy, ins.Add)):
                    fs, image = self._copy(stage, node, fs, image, env, no_cache)
                else:
                    raise BuildError(f"{node.keyword} is not supported here")
            except BuildError as exc:
                raise self._located(exc, node) from None
        if stage.index == self.graph.target and self.opts.labels:
            image = image.with_labels(list(self.opts.labels.items()))
        return StageResult(stage, fs, image, base, platform)

    def _build_trigger_sources(self, stage: Stage, triggers: Sequence[ins.Instruction]) -> None:
        """A base image's ONBUILD triggers may name stages of this Dockerfile (COPY --from,
        RUN --mount from=), which the graph could not see before the image was fetched: as in
        BuildKit, those stages are built now, and one defined after this stage is refused."""
        from .graph import from_refs, late_ref_error

        for node in triggers:
            for value, mount_target in from_refs(node):
                try:
                    index = self.graph.stage_index(value)
                except BuildError as exc:
                    raise BuildError(exc.message, location=stage.from_.range) from None
                if index is None:
                    continue
                if index >= stage.index:
                    raise BuildError(late_ref_error(value, mount_target, stage.display_name),
                                     location=stage.from_.range)
                self._stage_built(index)

    def platform_of(self, stage: Stage) -> str | None:
        """The platform a stage is built for: its FROM --platform, else --platform, else
        None (this machine's)."""
        if stage.platform:
            from .hostplatform import format_platform, parse_platform

            try:
                return format_platform(parse_platform(stage.platform))
            except ValueError as exc:
                raise BuildError(f"failed to parse platform {stage.platform}: {exc}: invalid "
                                 "argument", location=stage.from_.range) from None
        return self.opts.platform

    def base_of(self, stage: Stage) -> BaseImage:
        """The base image of a stage that starts from an image or a named context, resolved
        once: the build checks read its config before the build (as BuildKit resolves the
        bases first), the stage then builds on it."""
        with self._bases_lock:
            base = self._bases.get(stage.index)
            if base is not None:
                return base
            if stage.base.kind == "context" and self.bases.is_scratch(stage.base.name):
                # docker-image://scratch: no image to load, and no step for it (BuildKit's
                # llb.Scratch() has no vertex)
                base = self._bases[stage.index] = self.bases.resolve(stage.base.name, kind="context")
                return base
            sid = self.progress.start(self._step_name(stage, f"FROM {shown_base(stage)}", first=True))
            try:
                base = self.bases.resolve(stage.base.name, kind=stage.base.kind,
                                          platform=self.platform_of(stage), pull=self.opts.pull)
            except BuildError as exc:
                self.progress.error(sid, str(exc))
                raise self._located(exc, stage.from_) from None
            self.progress.internal_done(sid)
            self._bases[stage.index] = base
            return base

    def _parse_trigger(self, trigger: str, stage: Stage) -> list[ins.Instruction]:
        from .parse import parse_dockerfile

        try:
            parsed = parse_dockerfile(trigger + "\n", filename=f"ONBUILD trigger of {stage.base.name}")
        except BuildError as exc:
            raise BuildError(f"invalid ONBUILD trigger {trigger!r} in the base image: {exc.message}",
                             location=stage.from_.range) from None
        out = []
        for node in parsed.instructions:
            if isinstance(node, (ins.From, ins.Onbuild)) or isinstance(node, ins.Maintainer):
                raise BuildError(f"{node.keyword} isn't allowed as an ONBUILD trigger",
                                 location=stage.from_.range)
            out.append(replace(node, range=stage.from_.range))
        return out

    # -- filesystem steps -----------------------------------------------------------------
    def _step(
        self,
        stage: Stage,
        node: ins.Instruction,
        fs: FsState,
        op: Mapping[str, Any],
        action: Callable[[list[Path], Path, int], None],
        *,
        no_cache: bool,
        title: str,
        shown: str | None = None,
        link_base: bool = False,
    ) -> tuple[FsState, HistoryEntry]:
        """Key a step, reuse its cached result or run ``action(lowers, upper)``.

        Returns the new FsState and the step's history entry (``created_by`` left empty for
        the caller) and ``created`` from the cache record so that a cached rebuild gives the
        same image. A step that changed nothing still has a layer (an empty tar), as in
        BuildKit, where every RUN, COPY, ADD and WORKDIR other than ``/`` makes one.
        ``action`` gets the lower directories (top first), the upper directory and the
        progress id of the step. ``shown``: the step's text on the progress display, when it
        differs from ``title`` (its variables expanded, as BuildKit shows it). ``link_base``: the step does not read the layers below (COPY --link), so its key
        starts from scratch and the cached layer can be reused on any base."""
        parent_key = base_key(manifest_digest=None) if link_base else fs.key
        key = step_key(parent_key, op)
        chained = step_key(fs.key, {"link": str(key.digest)}) if link_base else key
        if self._interrupted is not None:
            raise StepInterrupted(self._interrupted)
        sid = self.progress.start(self._step_name(stage, shown or title))
        t0 = time.monotonic()
        record = None if no_cache else self._lookup(key.digest)
        hit = record is not None and self._record_usable(record)
        if self.explainer is not None:
            self.explainer.observe_step(stage, title, parent_key, key, hit,
                                        remember=not self.opts.dry_run)
        if not hit and self.opts.dry_run:
            self.progress.done(sid)
            self._report(stage, node, title, key, False, t0, {"empty": True})
            return FsState(chained, fs.layers, unknown=True), HistoryEntry("", empty_layer=True)
        if hit:
            assert record is not None
            self.store.touch_record(key.digest)
            self.progress.cached(sid)
            self._report(stage, node, title, key, True, t0, record)
            return self._apply_record(fs, chained, record)
        executed = False
        with self.store.lock(f"step-{key.digest.hex}"):
            # Another build may have made it while we waited for the lock.
            record = None if no_cache else self._lookup(key.digest)
            if record is None or not self._record_usable(record):
                self._running[sid] = key
                try:
                    record = self._execute(stage, fs, action, link_base, sid)
                except StepInterrupted:
                    self.progress.canceled(sid)
                    raise
                except BuildError as exc:
                    self.progress.error(sid, exc.message.split("\n")[0])
                    raise
                finally:
                    del self._running[sid]
                record = {**record, "step": title, "stage": stage.display_name,
                          "created": time.time()}
                self.store.put_record(key.digest, record)
                executed = True
        if executed:
            self.progress.done(sid)
        else:
            self.progress.cached(sid)
        self._report(stage, node, title, key, not executed, t0, record)
        return self._apply_record(fs, chained, record)

    def donor(self, sid: int) -> Path | None:
        """For the action of the running step ``sid``: the snapshot the last build made at
        its position (another key: an input changed), if the store still has it. A COPY
        may take unchanged files from it (``copy.copy_into``'s ``donor``)."""
        key = self._running.get(sid)
        previous = self.explainer.replaced(key) if key is not None and self.explainer is not None else None
        if previous is None:
            return None
        try:
            record = self.store.get_record(Digest.parse(previous))
            diff_id = Digest.parse(record["diff_id"]) if record else None
        except (KeyError, TypeError, ValueError):
            return None
        if diff_id is None or not self.store.has_snapshot(diff_id):
            return None
        return self.store.snapshot_path(diff_id)

    def _lookup(self, key: Digest) -> dict[str, Any] | None:
        """The local record of a key; failing a usable one, the --cache-from record (taken
        into the store: its layer fetched and unpacked, the record written to the index)."""
        record = self.store.get_record(key)
        if self.cache_import is not None and (record is None or not self._record_usable(record)):
            record = self.cache_import.record(key) or record
        return record

    def _record_usable(self, record: Mapping[str, Any]) -> bool:
        if record.get("empty"):
            # Written by an older pybuild, which made no layer for a step that changed
            # nothing: run the step again so that it gets its (empty) layer.
            return False
        try:
            diff_id = Digest.parse(record["diff_id"])
            blob = Digest.parse(record["digest"])
        except (KeyError, ValueError):
            return False
        # (a step's plain layer is kept as its snapshot only: Store.layer_file)
        return self.store.has_snapshot(diff_id) and (blob == diff_id or self.store.has_blob(blob))

    def _apply_record(self, fs: FsState, key: CacheKey,
                      record: Mapping[str, Any]) -> tuple[FsState, HistoryEntry]:
        created = format_time(self.opts.source_date_epoch if self.opts.source_date_epoch is not None
                              else float(record.get("created") or 0))
        diff_id = Digest.parse(record["diff_id"])
        blob = LayerBlob(diff_id, Digest.parse(record["digest"]), int(record["size"]),
                         str(record["media_type"]))
        return (FsState(key, fs.layers + (LayerRef(diff_id, blob),), unknown=fs.unknown),
                HistoryEntry("", empty_layer=False, created=created))

    def _report(self, stage: Stage, node: ins.Instruction, title: str, key: CacheKey,
                cached: bool, t0: float, record: Mapping[str, Any]) -> None:
        self.steps.append(StepReport(
            stage=stage.display_name, instruction=title, line=node.range.start,
            key=str(key.digest), cached=cached, seconds=round(time.monotonic() - t0, 3),
            layer=None if record.get("empty") else record.get("digest"),
            size=None if record.get("empty") else record.get("size"),
            diff_id=None if record.get("empty") else record.get("diff_id")))

    def _execute(self, stage: Stage, fs: FsState, action: Callable[[list[Path], Path, int], None],
                 link_base: bool, sid: int) -> dict[str, Any]:
        upper = self.store.tempdir("upper-")
        try:
            lowers = [] if link_base else self.lowers_of(fs)
            _root_like(upper)
            action(lowers, upper, sid)
            # Rootless, the step's files belong to the building user on the host: the layer
            # records them as the step saw them (root, or the subordinate ids).
            owner = None
            if os.geteuid() != 0:
                from .executor.run import step_owner as owner
            return commit_layer(self.store, upper, source_date_epoch=self.opts.source_date_epoch,
                                owner=owner)
        except BaseException:
            remove_tree(upper)
            raise

    def ensure_snapshot(self, layer: LayerRef) -> Path:
        """The unpacked snapshot of a layer, unpacking its blob the first time it is needed."""
        return ensure_snapshot(self.store, layer)

    # -- WORKDIR ---------------------------------------------------------------------
    def _workdir(self, stage: Stage, node: ins.Workdir, fs: FsState, image: ImageState,
                 env: StageEnv, no_cache: bool) -> tuple[FsState, ImageState]:
        path = env.expand(node.path, image, node)
        wd = normalize_workdir(image.workdir, path)
        image = image.changed(workdir=wd)
        if wd == "/":
            return fs, image.with_history(HistoryEntry(f"WORKDIR {wd}", empty_layer=True))
        op = {"kind": "mkdir", "path": wd, "user": image.user, "mode": 0o755,
              "epoch": self.opts.source_date_epoch}
        if image.user:
            # The owner is now read as --chown reads it (a bare uid is also the gid): a
            # folder made under the earlier reading must not be reused.
            op["owner"] = "chown"
        user = image.user

        def action(lowers: list[Path], upper: Path, _sid: int) -> None:
            self.runner.mkdir(lowers, upper, wd, user=user)

        # shown as written, its variables expanded (BuildKit: "WORKDIR rel/vv", not the path)
        shown = expand_shown(node.heading or f"WORKDIR {node.path}",
                             env.lookup(image), escape=self.graph.escape)
        fs, hist = self._step(stage, node, fs, op, action, no_cache=no_cache, title=f"WORKDIR {wd}",
                              shown=shown)
        return fs, image.with_history(replace(hist, created_by=f"WORKDIR {wd}"))

    # -- RUN ---------------------------------------------------------------------------
    def _run(self, stage: Stage, node: ins.Run, fs: FsState, image: ImageState, env: StageEnv,
             no_cache: bool) -> tuple[FsState, ImageState]:
        argv = run_argv(node, image)
        lookup = env.lookup(image)
        proc_env = dict(lookup)
        if "PATH" not in proc_env:
            proc_env["PATH"] = DEFAULT_PATH
        # Proxy build args reach the process, declared or not, but, as in BuildKit (ExecOp's
        # CacheMap drops Meta.ProxyEnv), not the cache key: another proxy reuses the layer.
        key_env = sorted(f"{k}={v}" for k, v in proc_env.items())
        proc_env.update(proxy_env(self.graph.build_args))
        network = node.network or self.opts.network
        insecure = node.security == "insecure"
        for device in node.devices:
            self._refuse_device(device)
        if insecure and "security.insecure" not in self.opts.allow:
            # BuildKit checks entitlements before it runs (or looks up) anything
            raise BuildError("granting entitlement security.insecure is not allowed by build "
                             "daemon configuration",
                             hint="RUN --security=insecure runs with every capability: allow it "
                                  "with pybuild build --allow security.insecure")
        mounts = self.runner.parse_mounts(node, env, image, self)
        self.cache_mount_ids.update(m.cache for m in mounts if m.cache is not None)
        if no_cache:
            self.runner.prune_caches(mounts)
        script = None
        if argv and argv[0].startswith("/dev/pipes/") and node.heredocs:
            script = node.heredocs[0]
            if node.prepend_shell:
                # BuildKit runs the mounted script through the shell: `/bin/sh -c /dev/pipes/X`.
                argv = (*image.effective_shell(), argv[0])
        spec_env = tuple(f"{k}={v}" for k, v in proc_env.items())
        cwd = image.workdir or "/"
        op = {
            "kind": "run",
            "argv": list(argv),
            "env": key_env,
            "user": image.user,
            "cwd": cwd,
            "network": network,
            "security": node.security or "sandbox",
            "mounts": [m.key_json() for m in mounts],
            "script": script.data if script else None,
            # The layer's file times are clamped to SOURCE_DATE_EPOCH: part of its result.
            "epoch": self.opts.source_date_epoch,
        }
        platform = self._run_platform.get(stage.index)
        if platform and platform != self._host_platform:
            op["platform"] = platform  # as BuildKit's ExecOp: its platform is in its digest
        if self.opts.extra_hosts:
            # As BuildKit's ExecOp cache map: the names are in the key, the addresses are not
            # (/etc/hosts is not part of the layer; another address reuses it).
            op["hosts"] = [host for host, _ in self.opts.extra_hosts]
        if self.opts.shm_size:
            op["shm"] = self.opts.shm_size  # BuildKit: a tmpfs mount of the exec op, so keyed
        if self.opts.ulimits:
            op["ulimits"] = [list(limit) for limit in self.opts.ulimits]  # the exec op's Meta
        # As BuildKit names the step: the instruction as written, flags included.
        title = node.heading or "RUN " + " ".join(node.command)
        history = run_history_text(argv, env, image)
        user = image.user

        def action(lowers: list[Path], upper: Path, sid: int) -> None:
            if "platform" in op:
                from .emulation import emulation_problem

                problem = emulation_problem(op["platform"])
                if problem:
                    raise ExecError(f"cannot run a step for {op['platform']}: {problem}",
                                    hint="or build the stage for this machine "
                                         "(FROM --platform=$BUILDPLATFORM) and cross-compile")
            tail: list[bytes] = []

            def output(chunk: bytes) -> None:
                tail.append(chunk)
                if len(tail) > 200:
                    del tail[:100]
                self.progress.output(sid, chunk)

            code = self.runner.run(lowers, upper, argv=argv, env=spec_env, cwd=cwd, user=user,
                                   network=network, mounts=mounts, output=output, script=script,
                                   memory=self.opts.memory, cpus=self.opts.cpus, solver=self,
                                   insecure=insecure, extra_hosts=self.opts.extra_hosts,
                                   shm_size=self.opts.shm_size, ulimits=self.opts.ulimits)
            if code != 0:
                last = b"".join(tail).decode("utf-8", "replace").splitlines()[-20:]
                shown = " ".join(node.command).split("\n")[0]
                raise ExecError(
                    f"RUN {shown} failed: exit code {code}",
                    hint=("last lines of its output:\n  " + "\n  ".join(last)) if last else None)

        fs, hist = self._step(stage, node, fs, op, action, no_cache=no_cache, title=title,
                              shown=shown_run(title, node, lookup, self.graph.escape))
        return fs, image.with_history(replace(hist, created_by=history))

    def _refuse_device(self, value: str) -> None:
        """``RUN --device``: pybuild registers no CDI device, so a required one fails the
        step as in BuildKit ("is not registered") and an optional one is left out, said."""
        from .parse_go import go_quote
        from .parse_typed import parse_device

        name, required = parse_device(value)
        if required:
            raise BuildError(f"required device {go_quote(name)} is not registered",
                             hint="pybuild gives RUN steps no CDI devices")
        self.progress.warn(f"Optional device {go_quote(name)} is not registered")

    # -- COPY and ADD ---------------------------------------------------------------------
    def _copy(self, stage: Stage, node: ins.Copy | ins.Add, fs: FsState, image: ImageState,
              env: StageEnv, no_cache: bool) -> tuple[FsState, ImageState]:
        from .copystep import plan_copy

        plan = plan_copy(self, stage, node, image, env)
        shown = expand_shown(plan.title, env.lookup(image), escape=self.graph.escape)
        fs, hist = self._step(stage, node, fs, plan.op, plan.action, no_cache=no_cache,
                              title=plan.title, shown=shown, link_base=plan.link)
        return fs, image.with_history(replace(hist, created_by=plan.history))

    def stage_result(self, name: str) -> StageResult | None:
        """The stage a --from value names (a name or an index), built; None if the value
        names no stage (an image or a named context)."""
        index = self.graph.stage_index(name)
        if index is None:
            return None
        return self._stage_built(index)

    def lowers_of(self, fs: FsState) -> list[Path]:
        return lower_dirs(self.store, fs.layers)


def _root_like(upper: Path) -> None:
    """The merged root takes the upper dir's mode: make it the 0755 of every image's / (a
    fresh temp dir is 0700, which would lock every other user out of the root)."""
    os.chmod(upper, 0o755)
