"""SLSA provenance as BuildKit writes it: the options of `--attest type=provenance`, the
predicate (SLSA v0.2, or v1 when asked) made from what a build did, and the in-toto
statement that wraps it.

What goes in, and why it looks as it does (BuildKit's solver/llbsolver/provenance):
- the request: the frontend (``dockerfile.v0``) and its args as buildx sends them
  (``build-arg:NAME``, ``label:NAME``, ``target``, ...); the Dockerfile's name is taken out
  of them into ``configSource.entryPoint``. ``mode=min`` drops build args, labels, secrets
  and ssh ids and then says the parameters are incomplete.
- the materials: every base image by its digest, named by a ``pkg:docker`` package URL
  with the platform it was resolved for (``pkg:oci`` for an OCI layout).
- the metadata: start and end times, completeness (the context is a local folder, which
  no digest pins: the materials are never complete, as BuildKit says for local sources),
  ``reproducible`` only when asked; and, for ``mode=max``, BuildKit's extension field with
  the Dockerfile's source and which lines each step came from, and ``buildConfig`` with
  pybuild's own steps in place of LLB operations.

Nothing here reads the disk or the network: ``ProvenanceFacts`` is the whole input.
"""
from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from .digest import Digest

__all__ = ["PREDICATE_V02", "PREDICATE_V1", "STATEMENT_TYPE", "Material", "ProvenanceFacts",
           "ProvenanceOptions", "StepFact", "invocation_id", "predicate", "purl", "statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1"
PREDICATE_V02 = "https://slsa.dev/provenance/v0.2"
PREDICATE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE_V02 = "https://mobyproject.org/buildkit@v1"
BUILD_TYPE_V1 = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
METADATA_KEY = "https://mobyproject.org/buildkit@v1#metadata"
HERMETIC_KEY = "https://mobyproject.org/buildkit@v1#hermetic"


@dataclass(frozen=True)
class ProvenanceOptions:
    """What `--provenance` / `--attest type=provenance,...` asked for (BuildKit's attrs)."""

    mode: str = "max"  # "min" | "max"
    version: str = "v0.2"  # "v0.2" | "v1": the SLSA predicate
    builder_id: str = ""
    reproducible: bool = False
    filename: str = "provenance.json"  # the file a local or tar output gets
    inline_only: bool = False  # only image outputs (index, push) get it

    @property
    def predicate_type(self) -> str:
        return PREDICATE_V1 if self.version == "v1" else PREDICATE_V02


@dataclass(frozen=True)
class Material:
    """A base image the build used: its name, the platform it was resolved for, its digest;
    ``local``: it came from an OCI layout folder, not a registry name."""

    ref: str
    platform: str | None
    digest: Digest
    local: bool = False


@dataclass(frozen=True)
class StepFact:
    """One step of the build as the provenance shows it (a stand-in for an LLB vertex)."""

    key: str  # the step's cache key: its digest
    stage: str
    instruction: str
    line: int
    inputs: tuple[str, ...] = ()  # keys of the steps it builds on
    layers: tuple[Mapping[str, Any], ...] = ()  # the image's layer descriptors up to its own


@dataclass(frozen=True)
class ProvenanceFacts:
    """Everything a predicate says, gathered by the build (``builder.attest``)."""

    args: Mapping[str, str]  # the frontend args, as buildx would send them
    dockerfile_name: str
    dockerfile: bytes
    materials: tuple[Material, ...]
    locals: tuple[str, ...]  # names of the local sources: context, dockerfile, named folders
    builder_platform: str
    started: str  # RFC 3339 times
    finished: str
    invocation: str
    secrets: tuple[tuple[str, bool], ...] = ()  # (id, optional) of the secrets RUN steps mount
    ssh: tuple[tuple[str, bool], ...] = ()
    network: bool = True  # whether any RUN step had the network
    steps: tuple[StepFact, ...] = field(default=())
    # a git or HTTP build context: (its URL as asked, its digest set: the commit as sha1 or
    # the download's sha256), BuildKit's git or HTTP source material and configSource
    context: tuple[str, Mapping[str, str]] | None = None
    # named contexts fetched from git or HTTP (--build-context NAME=URL): (URL, digest set)
    sources: tuple[tuple[str, Mapping[str, str]], ...] = ()


def invocation_id() -> str:
    """A build's id, as BuildKit's identity.NewID makes them: 25 letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(25))


def _familiar(name: str) -> tuple[str, str | None, Digest | None]:
    """distribution/reference's FamiliarName of ``name``, its tag (``latest`` when it has
    neither tag nor digest) and its digest."""
    from .reference import DEFAULT_REGISTRY, ImageRef

    ref = ImageRef.parse(name)
    path = ref.repository
    if ref.registry == DEFAULT_REGISTRY:
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/"):]
    else:
        path = f"{ref.registry}/{path}"
    return path, ref.tag, ref.digest


def purl(name: str, platform: str | None, *, kind: str = "docker") -> str:
    """BuildKit's RefToPURL: ``pkg:docker/NAMESPACE/NAME@TAG?digest=...&platform=...``,
    escaped as packageurl-go escapes (namespace and name as query words, the version and
    qualifier values as path segments)."""
    path, tag, digest = _familiar(name)
    parts = path.split("/")
    out = f"pkg:{kind}/" + "".join(quote_plus(p, safe="") + "/" for p in parts[:-1])
    out += quote_plus(parts[-1], safe="")
    if tag:
        out += "@" + quote(tag, safe="$&+,:;=@")
    qualifiers = []
    if digest is not None:
        qualifiers.append(f"digest={quote(str(digest), safe='$&+,:;=@')}")
    if platform:
        qualifiers.append(f"platform={quote(_normal_platform(platform), safe='$&+,:;=@')}")
    return out + ("?" + "&".join(qualifiers) if qualifiers else "")


def _normal_platform(platform: str) -> str:
    """containerd's Normalize then Format: arm64 without v8, arm with v7, amd64 without v1."""
    from .hostplatform import format_platform, normalize_arch

    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    return format_platform((os_name, *normalize_arch(arch, variant)))


def _digest_set(digest: Digest) -> dict[str, str]:
    return {digest.algorithm: digest.hex}


def _request(opts: ProvenanceOptions, facts: ProvenanceFacts) -> tuple[dict[str, Any], bool]:
    """The request parameters, and whether they are all there (``mode=min`` leaves out
    build args and labels, and then says so)."""
    args = {k: v for k, v in facts.args.items() if k != "filename"}
    complete = True
    if opts.mode == "min":
        kept = {k: v for k, v in args.items() if not k.startswith(("build-arg:", "label:"))}
        complete = len(kept) == len(args)
        args = kept
    request: dict[str, Any] = {"frontend": "dockerfile.v0"}
    if args:
        request["args"] = dict(sorted(args.items()))  # Go writes a map's keys in order
    if opts.mode == "max":
        if facts.secrets:
            request["secrets"] = [_id(i, o) for i, o in facts.secrets]
        if facts.ssh:
            request["ssh"] = [_id(i, o) for i, o in facts.ssh]
    if facts.locals:
        request["locals"] = [{"name": n} for n in facts.locals]
    return request, complete


def _id(ident: str, optional: bool) -> dict[str, Any]:
    return {"id": ident, **({"optional": True} if optional else {})}


def _materials(facts: ProvenanceFacts) -> list[dict[str, Any]]:
    out = [{"uri": purl(m.ref, m.platform, kind="oci" if m.local else "docker"),
            "digest": _digest_set(m.digest)} for m in facts.materials]
    if facts.context is not None:  # after the images, as BuildKit lists git and HTTP sources
        out.append({"uri": facts.context[0], "digest": dict(facts.context[1])})
    out += [{"uri": uri, "digest": dict(digest)} for uri, digest in facts.sources]
    return out


def _config_source(facts: ProvenanceFacts, path_key: str) -> dict[str, Any]:
    """Where the build definition came from: a remote context's URL and digest (as
    BuildKit's RequestProvenance finds the context among the materials), and the
    Dockerfile's name (``entryPoint`` in v0.2, ``path`` in v1)."""
    out: dict[str, Any] = {}
    if facts.context is not None:
        out = {"uri": facts.context[0], "digest": dict(facts.context[1])}
    out[path_key] = facts.dockerfile_name
    return out


def _build_config(facts: ProvenanceFacts) -> tuple[dict[str, Any], dict[str, str]]:
    """pybuild's steps as BuildKit's ``llbDefinition`` (ids ``stepN``, inputs ``stepM:0``)
    with the ``digestMapping`` from each step's key; and the step ids by key."""
    ids = {s.key: f"step{i}" for i, s in enumerate(facts.steps)}
    definition = []
    for step in facts.steps:
        entry: dict[str, Any] = {"id": ids[step.key],
                                 "op": {"pybuild": {"stage": step.stage,
                                                    "instruction": step.instruction}}}
        inputs = [f"{ids[k]}:0" for k in step.inputs if k in ids]
        if inputs:
            entry["inputs"] = inputs
        definition.append(entry)
    config: dict[str, Any] = {}
    if definition:
        config["llbDefinition"] = definition
        config["digestMapping"] = {k: ids[k] for k in sorted(ids)}
    return config, ids


def _buildkit_metadata(facts: ProvenanceFacts, ids: Mapping[str, str]) -> dict[str, Any]:
    """BuildKit's extension field for ``mode=max``: the Dockerfile (base64, as Go writes
    bytes) with the lines each step came from, and each step's layers."""
    import base64

    locations = {ids[s.key]: {"locations": [{"ranges": [
        {"start": {"line": s.line}, "end": {"line": s.line}}]}]}
        for s in facts.steps if s.line > 0}
    source = {"locations": dict(sorted(locations.items())),
              "infos": [{"filename": facts.dockerfile_name, "language": "Dockerfile",
                         "data": base64.b64encode(facts.dockerfile).decode()}]}
    out: dict[str, Any] = {"source": source}
    layers = {f"{ids[s.key]}:0": [list(s.layers)] for s in facts.steps if s.layers}
    if layers:
        out["layers"] = dict(sorted(layers.items()))
    return out


def predicate(opts: ProvenanceOptions, facts: ProvenanceFacts) -> dict[str, Any]:
    """The SLSA predicate BuildKit would write for this build, in its field order."""
    request, request_complete = _request(opts, facts)
    materials = _materials(facts)
    materials_complete = not facts.locals  # a local folder is pinned by no digest
    hermetic = materials_complete and not facts.network
    config_source: dict[str, Any] = {}
    build_config: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if opts.mode == "max":
        build_config, ids = _build_config(facts)
        meta = _buildkit_metadata(facts, ids)
    if opts.version == "v1":
        config_source = _config_source(facts, "path")
        internal: dict[str, Any] = {"builderPlatform": facts.builder_platform}
        if build_config:
            internal = {"buildConfig": build_config, **internal}  # Go sorts this map's keys
        definition: dict[str, Any] = {"buildType": BUILD_TYPE_V1}
        if materials:
            definition["resolvedDependencies"] = materials
        definition["externalParameters"] = {"configSource": config_source, "request": request}
        definition["internalParameters"] = internal
        metadata: dict[str, Any] = {"invocationId": facts.invocation, "startedOn": facts.started,
                                    "finishedOn": facts.finished, "buildkit_metadata": meta}
        if hermetic:
            metadata["buildkit_hermetic"] = True
        metadata["buildkit_completeness"] = {"request": request_complete,
                                             "resolvedDependencies": materials_complete}
        if opts.reproducible:
            metadata["buildkit_reproducible"] = True
        return {"buildDefinition": definition,
                "runDetails": {"builder": {"id": opts.builder_id}, "metadata": metadata}}
    out: dict[str, Any] = {"builder": {"id": opts.builder_id}, "buildType": BUILD_TYPE_V02}
    if materials:
        out["materials"] = materials
    out["invocation"] = {"configSource": _config_source(facts, "entryPoint"),
                         "parameters": request,
                         "environment": {"platform": facts.builder_platform}}
    if build_config:
        out["buildConfig"] = build_config
    metadata = {"buildInvocationID": facts.invocation, "buildStartedOn": facts.started,
                "buildFinishedOn": facts.finished,
                "completeness": {"parameters": request_complete, "environment": True,
                                 "materials": materials_complete},
                "reproducible": opts.reproducible, METADATA_KEY: meta}
    if hermetic:
        metadata[HERMETIC_KEY] = True
    out["metadata"] = metadata
    return out


def statement(predicate_type: str, body: Mapping[str, Any],
              subjects: Sequence[tuple[str, Digest]]) -> dict[str, Any]:
    """The in-toto statement around a predicate: one subject per (name, digest)."""
    return {"_type": STATEMENT_TYPE, "predicateType": predicate_type,
            "subject": [{"name": name, "digest": _digest_set(d)} for name, d in subjects],
            "predicate": dict(body)}
