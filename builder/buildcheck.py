"""`pybuild build --check`, and the build checks a build runs first: the checks
(``builder.checks_rules``) run into a ``Linter`` over the graph, with the base images'
configs read from the store or, without pulling layers, from their registry.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .digest import Digest
from .errors import BuildError, ContextError, UsageError
from .progress import Progress

__all__ = ["check", "run_check", "run_targets", "violation"]


def check(req: Any, dockerfile: Any, graph: Any, on_finding: Any, *,
           reached: Any, ignore: Any, base_config: Any) -> Any:
    """Run the build checks (``builder.checks_rules``) into a ``Linter``; ``on_finding``
    shows each finding as it is made."""
    from .checks import Linter, options_for
    from .checks_rules import run_checks

    linter = Linter(options_for(dockerfile.directive("check"), req.build_args),
                    on_finding=on_finding)
    run_checks(linter, dockerfile, graph, build_args=req.build_args, reached=reached,
               base_config=base_config, ignore=ignore, target=req.target, platform=req.platform)
    return linter


def violation(linter: Any, dockerfile: Any) -> BuildError | None:
    """Under ``check=error=true``, findings fail the build: BuildKit's words naming the
    rules, at the line of the first finding."""
    from .errors import CheckError, SourceRange

    text = linter.violation()
    if text is None:
        return None
    line = linter.findings[0].line
    source = dockerfile.source_line(line)
    where = SourceRange(line, line, len(source) - len(source.lstrip()), dockerfile.filename)
    return CheckError(text, location=where, source_line=source,
                      hint="the build checks run with error=true (the # check= directive or "
                           "the BUILDKIT_DOCKERFILE_CHECK build arg)")


def run_check(req: Any) -> int:
    """`pybuild build --check`: run the build checks only, print what they found on stdout
    as `docker build --check` prints it; 1 when they found anything (or failed), else 0."""
    from contextlib import ExitStack

    from .base import parse_named_contexts
    from .cache.store import Store, default_root
    from .checks import check_report
    from .context import BuildContext
    from .graph import build_graph

    progress = Progress(req.progress)
    store = Store(Path(req.root) if req.root else default_root())
    with ExitStack() as scope:
        scope.callback(progress.close)
        req, dockerfile, name, context_dir, df_path, remote = _open_dockerfile(
            req, "--check", scope, store, progress)
        contexts = parse_named_contexts(req.build_contexts)
        graph = build_graph(dockerfile, build_args=req.build_args, target=req.target, platform=req.platform,
                            named_contexts=list(contexts))
        bases = _CheckBases(store, progress, req, contexts)
        # without --target every stage is checked (as BuildKit's lint does)
        reached = graph.order if req.target else range(len(graph.stages))
        linter = check(req, dockerfile, graph, None, reached=reached, base_config=bases.config,
                        ignore=BuildContext.open(context_dir, df_path, remote=remote).ignore)
    sys.stdout.write(check_report(linter.findings, dockerfile.lines, name))
    failed = violation(linter, dockerfile)
    if failed is not None:
        sys.stdout.write("\n")  # as buildx: a blank line between the report and the error
        sys.stdout.flush()
        raise failed
    sys.stdout.flush()
    return 1 if linter.findings else 0


def _open_dockerfile(req: Any, flag: str, scope: Any, store: Any, progress: Progress) -> Any:
    """(request, parsed Dockerfile, its name, context folder, Dockerfile path, remote?) for
    a call that only reads the Dockerfile: a remote context is fetched into the store's
    tmp/ (``store``, or the request's when None) and removed when ``scope`` ends."""
    from .build import _read_dockerfile
    from .parse import parse_dockerfile
    from .remotecontext import for_remote, is_remote, open_remote

    if req.context == "-" or req.dockerfile == "-":
        raise UsageError(f"{flag} reads the Dockerfile and the context from a folder, not stdin")
    remote = is_remote(req.context)
    context_dir = Path(req.context).resolve()
    if not remote and not context_dir.is_dir():
        raise ContextError(f"the build context {req.context} is not a folder")
    if remote:
        if store is None:
            from .cache.store import Store, default_root

            store = Store(Path(req.root) if req.root else default_root())
        fetched = scope.enter_context(open_remote(req.context, store.root / "tmp",
                                                  build_args=req.build_args, progress=progress))
        req, context_dir = for_remote(req, fetched), fetched.root
    text, name, df_path = _read_dockerfile(req, context_dir)
    return req, parse_dockerfile(text, filename=name), name, context_dir, df_path, remote


def run_targets(req: Any) -> int:
    """`pybuild build --call targets`: the Dockerfile's stages and their descriptions on
    stdout, as buildx prints them (``builder.calltargets``); nothing is built."""
    from contextlib import ExitStack

    from .calltargets import format_targets, list_targets

    progress = Progress(req.progress)
    with ExitStack() as scope:
        scope.callback(progress.close)
        # no store unless the context is remote: listing reads only the Dockerfile
        dockerfile = _open_dockerfile(req, "--call targets", scope, None, progress)[1]
        table = format_targets(list_targets(dockerfile))
    sys.stdout.write(table)
    sys.stdout.flush()
    return 0


class _CheckBases:
    """Base image configs for `--check`: from the store when it has the image, else only
    the manifest and config from the registry (no layers, nothing stored)."""

    def __init__(self, store: Any, progress: Progress, req: Any, contexts: Any) -> None:
        self.store = store
        self.progress = progress
        self.req = req
        self.contexts = contexts
        self._seen: dict[tuple[str, str], Any] = {}

    def config(self, stage: Any) -> Any:
        platform = stage.platform or self.req.platform
        key = (stage.base.kind, stage.base.name, platform)
        if key not in self._seen:
            self._seen[key] = self._config(stage.base.kind, stage.base.name, platform)
        return self._seen[key]

    def _config(self, kind: str, name: str, platform: str | None) -> Any:
        from .base import foreign_platform, is_for, load_stored_image

        wanted = foreign_platform(platform)
        if kind == "context":
            nc = self.contexts[name.lower()]
            if nc.kind in ("dir", "url", "scratch"):  # files only, or nothing: no image config
                return {}
            if nc.kind == "oci-layout":
                from .oci.layout import OciLayout

                return json.loads(OciLayout(nc.value).resolve(nc.tag, platform=wanted).config_bytes)
            name = nc.value
        from .reference import ImageRef

        ref = ImageRef.parse(name)
        if not self.req.pull:
            doc = self.store.get_ref(str(ref))
            if doc and doc.get("manifest"):
                loaded = load_stored_image(self.store, Digest.parse(doc["manifest"]))
                if loaded is not None and (wanted is None or is_for(loaded[0], wanted)):
                    return loaded[0]
        from .oci.registry import resolve_for_pull

        sid = self.progress.start(f"[internal] load metadata for {ref}")
        try:
            _, _, resolved = resolve_for_pull(ref, insecure_registries=self.req.insecure_registries,
                                              platform=wanted)
        except BuildError as exc:
            self.progress.error(sid, str(exc))
            raise
        self.progress.internal_done(sid)
        return json.loads(resolved.config_bytes)
