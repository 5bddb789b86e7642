"""A build's provenance attestation, from what the build did to where it goes.

``gather`` turns the request and the solved build of one platform into
``provenance.ProvenanceFacts``; ``for_image`` makes the statement about an image (its
subjects the ``pkg:docker`` names of the -t tags, with the image manifest's digest, as
BuildKit's image exporter fills them) and the attestation manifest that carries it;
``write_file`` puts the statement about a root filesystem (every regular file a subject) in
the folder a local or tar output is made from, as BuildKit's local exporter does.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .digest import Digest, sha256_file
from .provenance import (
    Material,
    ProvenanceFacts,
    ProvenanceOptions,
    StepFact,
    predicate,
    purl,
    statement,
)
from .solve import format_time

__all__ = ["Attester", "check_outputs", "for_image", "gather", "write_file", "write_oci"]


def _frontend_args(req: Any, dockerfile_name: str) -> dict[str, str]:
    """The frontend options buildx would send for these flags (BuildKit's FilterArgs
    leaves out the host-specific ones: platform, image-resolve-mode, cache imports)."""
    args = {f"build-arg:{k}": v for k, v in req.build_args.items()}
    args.update({f"label:{k}": v for k, v in req.labels.items()})
    args["filename"] = dockerfile_name
    if req.target:
        args["target"] = req.target
    if req.no_cache:
        args["no-cache"] = ""
    elif req.no_cache_filter:
        args["no-cache"] = ",".join(req.no_cache_filter)
    if req.network in ("none", "host"):
        args["force-network-mode"] = req.network
    if req.extra_hosts:
        args["add-hosts"] = ",".join(f"{h}={ip}" for h, ip in req.extra_hosts)
    if req.shm_size:
        args["shm-size"] = str(req.shm_size)
    if req.ulimits:
        args["ulimit"] = ",".join(f"{n}={s}:{h}" for n, s, h in req.ulimits)
    for name, value in req.build_contexts.items():
        if name in req.named_remotes:
            args[f"context:{name}"] = req.named_remotes[name].given  # the URL, as buildx sends it
        elif value.startswith(("docker-image://", "oci-layout://")):
            args[f"context:{name}"] = value
        else:
            args[f"context:{name}"] = f"local:{name}"
    return args


def _material(base: Any, platform: str) -> Material | None:
    """A stage's base image as a material: a registry name, or an OCI layout (pkg:oci,
    named after its folder); a folder context or scratch is none. Its digest is the one
    the name resolved to, an index's when it named one, as BuildKit pins it."""
    if base is None or base.manifest_digest is None:
        return None
    name = str(base.name)
    if name.startswith("oci-layout://"):
        import re

        folder = os.path.basename(name[len("oci-layout://"):].rstrip("/")) or "layout"
        folder = re.sub(r"[^a-z0-9._-]+", "-", folder.lower()).strip("-._") or "layout"
        return Material(folder, platform, base.manifest_digest, local=True)
    return Material(name, platform, base.resolved_digest or base.manifest_digest)


def _mount_ids(stages: Sequence[Any]) -> tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]:
    """The secrets and ssh sockets RUN steps mount, (id, optional), as BuildKit lists them
    (a secret's id defaults to its target's base name; ssh's to ``default``)."""
    import csv

    from . import instructions as ins

    found: dict[str, dict[str, bool]] = {"secret": {}, "ssh": {}}
    for stage in stages:
        for node in stage.instructions:
            if not isinstance(node, ins.Run):
                continue
            for raw in node.mounts:
                opts = {}
                for item in next(csv.reader([raw]), []):
                    k, _, v = item.partition("=")
                    opts[k.strip().lower()] = v
                kind = opts.get("type")
                if kind not in found:
                    continue
                default = os.path.basename(opts.get("target") or opts.get("dst") or "") \
                    if kind == "secret" else "default"
                ident = opts.get("id") or default
                optional = opts.get("required", "false").lower() not in ("true", "1")
                found[kind][ident] = found[kind].get(ident, True) and optional
    return (tuple(sorted(found["secret"].items())), tuple(sorted(found["ssh"].items())))


def _steps(solver: Any, image: Any) -> tuple[StepFact, ...]:
    """The build's steps in the order they were reported, each building on the step before
    it in its stage; a step whose layer is in the image gets the layers up to its own."""
    layers = [d.to_json() for d in image.layers]
    positions = {str(d): i for i, d in enumerate(image.config.diff_ids)}
    last: dict[str, str] = {}
    out = []
    for step in solver.steps:
        at = positions.get(step.diff_id or "")
        out.append(StepFact(step.key, step.stage, step.instruction, step.line,
                            inputs=(last[step.stage],) if step.stage in last else (),
                            layers=tuple(layers[:at + 1]) if at is not None else ()))
        last[step.stage] = step.key
    return tuple(out)


def _dockerfile_fetched(req: Any, remote: Any) -> bool:
    """Whether the Dockerfile came with the remote context (not stdin or a local -f)."""
    if remote is None or not req.dockerfile or req.dockerfile == "-":
        return remote is not None and not req.dockerfile
    return Path(req.dockerfile).is_relative_to(remote.root)


def gather(req: Any, solver: Any, image: Any, *, platform: str, dockerfile_name: str,
           dockerfile: bytes, started: float, invocation: str, remote: Any = None) -> ProvenanceFacts:
    """What the provenance of ``image`` (one platform's) says about the build; ``remote``:
    the git or HTTP context it was built from (``builder.remotecontext``), if any."""
    from .hostplatform import format_platform, host_build_platform

    results = [solver.results[i] for i in sorted(solver.results)]
    materials: list[Material] = []
    for result in results:
        material = _material(result.base, result.platform or platform)
        if material is not None and material not in materials:
            materials.append(material)
    folders = sorted(n for n, v in req.build_contexts.items()
                     if not v.startswith(("docker-image://", "oci-layout://")) and n not in req.named_remotes)
    secrets, ssh = _mount_ids([r.stage for r in results])
    runs = any(type(n).__name__ == "Run" for r in results for n in r.stage.instructions)
    return ProvenanceFacts(
        args=_frontend_args(req, dockerfile_name), dockerfile_name=dockerfile_name,
        dockerfile=dockerfile, materials=tuple(materials),
        # a remote context is no local source: the Dockerfile comes with it, unless -f
        # names a file on this machine
        locals=tuple(sorted({*(() if remote is not None else ("context",)),
                             *(() if _dockerfile_fetched(req, remote) else ("dockerfile",)),
                             *folders})),
        context=remote.material() if remote is not None else None,
        sources=tuple(req.named_remotes[n].material() for n in sorted(req.named_remotes)),
        builder_platform=format_platform(host_build_platform()),
        started=format_time(started), finished=format_time(time.time()), invocation=invocation,
        secrets=secrets, ssh=ssh, network=runs and req.network != "none",
        steps=_steps(solver, image))


def image_subjects(names: Sequence[str], platform: str, digest: Digest) -> list[tuple[str, Digest]]:
    """One subject per image name: its ``pkg:docker`` URL with the platform (none without a
    name, as in BuildKit's image exporter)."""
    return [(purl(name, platform), digest) for name in names if name]


def for_image(opts: ProvenanceOptions, facts: ProvenanceFacts, image: Any, names: Sequence[str],
              platform: str, *, blob_dir: Path) -> Any:
    """The attestation manifest (an ImageSpec) with the provenance of ``image``."""
    from .oci.attestation import attestation_manifest, statement_bytes

    subjects = image_subjects(names, platform, image.manifest_digest)
    body = statement(opts.predicate_type, predicate(opts, facts), subjects)
    return attestation_manifest([(opts.predicate_type, statement_bytes(body))], blob_dir=blob_dir)


def _regular_files(root: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every regular file under ``root`` as (relative path, path), in Go's WalkDir order
    (each folder's entries sorted by name, a folder's contents right after it)."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _regular_files(Path(entry.path), rel + "/")
        elif entry.is_file(follow_symlinks=False):
            yield rel, Path(entry.path)


def write_file(opts: ProvenanceOptions, facts: ProvenanceFacts, root: Path, *,
               mtime: int | None) -> None:
    """``root/provenance.json`` (or the filename= asked): the statement about the files
    under ``root``, indented as BuildKit writes it, mode 0600."""
    subjects = [(rel, sha256_file(path)[0]) for rel, path in _regular_files(root)]
    body = statement(opts.predicate_type, predicate(opts, facts), subjects)
    dest = root / opts.filename
    dest.unlink(missing_ok=True)  # a file of the image by that name is replaced, as there
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    from .oci._json import _GO_ESCAPES  # Go's encoder escapes <, >, & as \u003c...

    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(json.dumps(body, indent=2, ensure_ascii=False).translate(_GO_ESCAPES))
    if mtime is not None:
        os.utime(dest, (mtime, mtime))



class Attester:
    """The provenance of one build (`--provenance`): one invocation id, and for each
    platform image the facts, the attestation manifest, the provenance file."""

    def __init__(self, opts: ProvenanceOptions, req: Any, *, store: Any, dockerfile_name: str,
                 dockerfile: bytes, started: float, remote: Any = None) -> None:
        from .provenance import invocation_id

        self.remote = remote  # a git or HTTP context (builder.remotecontext)

        self.opts = opts
        self.req = req
        self.store = store
        self.dockerfile_name = dockerfile_name
        self.dockerfile = dockerfile
        self.started = started  # wall-clock time the build started
        self.invocation = invocation_id()
        self._made: dict[tuple[str, tuple[str, ...]], Any] = {}

    def facts(self, solver: Any, image: Any) -> ProvenanceFacts:
        return gather(self.req, solver, image, platform=str(image.platform),
                      dockerfile_name=self.dockerfile_name, dockerfile=self.dockerfile,
                      started=self.started, invocation=self.invocation, remote=self.remote)

    def manifest(self, solver: Any, image: Any, names: Sequence[str]) -> Any:
        """The attestation manifest of ``image`` pushed or written under ``names``."""
        key = (str(image.manifest_digest), tuple(names))
        if key not in self._made:
            self._made[key] = for_image(self.opts, self.facts(solver, image), image, names,
                                        str(image.platform), blob_dir=self.store.root / "blobs")
        return self._made[key]

    def index(self, parts: Sequence[tuple[Any, Any]], names: Sequence[str], *,
              entries: Mapping[Any, Mapping[str, str]] | None = None) -> Any:
        """The index of the images of ``parts`` ((solver, image)), each followed at the end
        by its attestation manifest, as BuildKit lists them; with the build's ``index:``
        annotations, and ``entries`` (the images' manifest-descriptor annotations)."""
        from .oci.attestation import entry_annotations
        from .oci.image import IndexSpec

        images = [image for _, image in parts]
        atts = [self.manifest(solver, image, names) for solver, image in parts]
        index = IndexSpec.of([*images, *atts], self.req.annotations.index, entries={
            **(entries or {}),
            **{att.manifest_digest: entry_annotations(image.manifest_digest)
               for att, image in zip(atts, images)}})
        self.store.put_blob_bytes(index.manifest_bytes)
        return index

    def file_writer(self, solver: Any, image: Any) -> Any:
        """What writes the provenance file into a local or tar output's folder (None when
        inline-only asked for image outputs alone)."""
        if self.opts.inline_only:
            return None
        epoch = self.req.source_date_epoch

        def write(root: Path) -> None:
            write_file(self.opts, self.facts(solver, image), root, mtime=epoch)
        return write


def check_outputs(req: Any, progress: Any) -> None:
    """Where a provenance attestation cannot go, as buildx and BuildKit say: a docker
    archive holds no index, docker media types no attestation. The local store keeps the
    image alone, as docker's own image store does: said once, when nothing else keeps it."""
    from .errors import UsageError

    for out in req.outputs:
        if out.get("type") == "docker":
            raise UsageError("docker exporter does not support exporting manifest lists, use the "
                             "oci exporter instead",
                             hint="the provenance attestation makes an image index: write "
                                  "-o type=oci,dest=FILE, or turn it off with --provenance=false")
        if out.get("oci-mediatypes") == "false":
            raise UsageError('cannot export attestations with "oci-mediatypes=false"',
                             hint="drop oci-mediatypes=false, or turn the provenance off")
    carried = [o for o in req.outputs if o.get("type") in ("oci", "registry")
               or o.get("push") == "true"
               or (o.get("type") in ("local", "tar") and not req.provenance.inline_only)]
    if not carried:
        progress.warn("--provenance: pybuild's image store keeps the image without its "
                      "attestation (as docker's image store does); push it (--push) or write "
                      "-o type=oci,dest=FILE to keep the provenance")


def write_oci(out: Any, index: Any, image: Any, req: Any, names: Sequence[str]) -> None:
    """`-o type=oci` with provenance: the index of the image and its attestation manifest;
    docker's manifest.json names the image, so docker load still takes the archive."""
    from .errors import BuildError
    from .export import to_dest
    from .oci.archive import write_oci_index_archive

    dest = out.get("dest", "")
    try:
        to_dest(dest, lambda p: write_oci_index_archive(
            p, index, index.images, names, source_date_epoch=req.source_date_epoch,
            annotations=req.annotations.index_descriptor, docker_image=image))
    except OSError as exc:
        raise BuildError(f"cannot write the oci output to {dest}: {exc.strerror or exc}") from None
