"""Stages, their dependencies and the order to build them in.

The graph knows which stage needs which (FROM an earlier stage, COPY --from, RUN
--mount from=) and prunes to what the target needs, so a stage that is not needed is
never resolved or built. Build args are evaluated here as far as FROM lines need them.
As in BuildKit, a --from may name any stage, and a loop among stages or a stage needed
before it is built is refused here, before anything runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import instructions as ins
from .errors import ExpandError, GraphError
from .expand import expand_word
from .hostplatform import format_platform, host_build_platform, parse_platform
from .parse_go import go_quote
from .parse_typed import suggest

__all__ = ["CHECK_ARG", "PROXY_ARGS", "UNUSED_ARGS_WARNING", "BuildGraph", "Stage", "StageBase", "build_graph",
           "platform_args", "proxy_env"]

_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
PROXY_ARGS = frozenset(n for base in _PROXY_NAMES for n in (base, base.lower()))


def proxy_env(build_args: dict[str, str]) -> dict[str, str]:
    """The proxy variables every RUN gets from the build args, whether or not an ARG declares them.

    As BuildKit (proxyEnvFromBuildArgs, then ExecOp's proxyEnvList): a build arg names a proxy in
    any case (`https_proxy`, `HTTPS_PROXY`); of several spellings the last in sorted order wins;
    an empty value sets nothing; and a set one is given under both the upper- and the lower-case
    name, over any ENV or ARG of those names, since these are appended to the step's environment.
    """
    out: dict[str, str] = {}
    for name in _PROXY_NAMES:
        value = ""
        for key in sorted(build_args):
            if key.casefold() == name.casefold():
                value = build_args[key]
        if value:
            out[name] = out[name.lower()] = value
    return out


UNUSED_ARGS_WARNING = "[Warning] One or more build-args [{}] were not consumed"
CHECK_ARG = "BUILDKIT_DOCKERFILE_CHECK"  # the build checks' options, read by builder.checks


def platform_args(target: str | None = None) -> dict[str, str]:
    """BuildKit's predefined platform args: the build platform is the host's, the target
    platform ``target`` (``--platform``, normalised as ``linux/arm64``) or the host's."""
    build = host_build_platform()
    out = {}
    for prefix, (os_name, arch, variant) in (("BUILD", build),
                                            ("TARGET", parse_platform(target) if target else build)):
        out[f"{prefix}PLATFORM"] = format_platform((os_name, arch, variant))
        out[f"{prefix}OS"] = os_name
        out[f"{prefix}ARCH"] = arch
        out[f"{prefix}VARIANT"] = variant
    return out


@dataclass(frozen=True, slots=True)
class StageBase:
    """What a stage starts from: scratch, an earlier stage, a named build context, or an image."""

    kind: str  # "scratch" | "stage" | "context" | "image"
    name: str  # the expanded FROM word
    stage: int | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    """One FROM and the instructions under it, with what it depends on."""

    index: int
    name: str | None
    base: StageBase
    platform: str | None
    from_: ins.From
    instructions: tuple[ins.Instruction, ...]
    deps: frozenset[int]
    # COPY --from / mount from= values that are not stages: named contexts or images
    external: tuple[str, ...] = ()
    # BuildKit's error for the first step here that names a stage defined after this one
    # (or this one), and that step: raised if this stage is ever built.
    late_ref: tuple[str, ins.Instruction] | None = None

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True, slots=True)
class BuildGraph:
    """The stages of a Dockerfile, the target and the order to build it in."""

    stages: tuple[Stage, ...]
    target: int
    order: tuple[int, ...]  # stages the target needs, dependencies first
    # the global scope: platform args and the ARGs before the first FROM that have a value
    global_args: tuple[tuple[str, str | None], ...]
    build_args: Mapping[str, str]
    escape: str = "\\"
    warnings: tuple[str, ...] = ()
    used_args: frozenset[str] = field(default_factory=frozenset)
    # stage name -> index; of stages with the same name the last (as BuildKit's --from)
    names: Mapping[str, int] = field(default_factory=dict)

    def stage(self, index: int) -> Stage:
        return self.stages[index]

    def stage_index(self, value: str) -> int | None:
        """The stage a --from value names (a name, or a number), if any."""
        index = _stage_index(value, len(self.stages))
        return index if index is not None else self.names.get(value.lower())

    def layers_of_order(self) -> list[list[int]]:
        """The needed stages grouped in waves: each wave depends only on earlier waves."""
        done: set[int] = set()
        waves: list[list[int]] = []
        pending = list(self.order)
        while pending:
            wave = [i for i in pending if self.stages[i].deps <= done]
            waves.append(wave)
            done.update(wave)
            pending = [i for i in pending if i not in done]
        return waves


def _expand(word: str, env: Mapping[str, str], escape: str, where: ins.Instruction,
            used: set[str] | None = None) -> str:
    try:
        return expand_word(word, env, escape=escape, used=used)
    except ExpandError as exc:
        raise ExpandError(exc.message, location=where.range) from None


def _stage_index(value: str, count: int) -> int | None:
    """A --from value that is a number (as Go's strconv.Atoi reads one) names a stage by
    its index, before or after the current one."""
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        return None
    index = int(value)
    if not 0 <= index < count:
        raise GraphError(f"invalid stage index {index}")
    return index


def _at(dockerfile: ins.Dockerfile, message: str, node: ins.Instruction) -> GraphError:
    """A graph error located at ``node``, with its source line."""
    return GraphError(message, location=node.range,
                      source_line=dockerfile.source_line(node.range.start))


def _trigger(node: ins.Onbuild, dockerfile: ins.Dockerfile, where: ins.Instruction) -> ins.Instruction:
    """The instruction of a parent stage's ONBUILD trigger; one that does not parse is an error
    of the stage it runs in (at its FROM), as in BuildKit."""
    if node.instruction is None:
        raise _at(dockerfile, node.error, where)
    return node.instruction


def _check_reference(name: str, where: ins.Instruction, dockerfile: ins.Dockerfile) -> None:
    """An image a stage starts from or copies from must be a valid reference, in every stage,
    needed or not: BuildKit parses them all before it builds anything."""
    from .reference import ImageRef, InvalidReference

    try:
        ImageRef.parse(name)
    except InvalidReference as exc:
        if exc.go_message is not None:
            raise _at(dockerfile, f"failed to parse stage name {go_quote(name)}: {exc.go_message}",
                      where) from None


def _suggest_var(message: str, word: str, known: Mapping[str, str]) -> str:
    """BuildKit's hint on an expression that came out empty: the first of its variables that
    is not set and is close to the name of one that is."""
    import re

    for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", word):
        if name not in known:
            match = suggest(name, list(known), case_sensitive=True)
            if match:
                return f"{message} (did you mean {match}?)"
    return message


def late_ref_error(value: str, mount_target: str | None, stage_name: str) -> str:
    """BuildKit's words for a step naming a stage that is not built before its own."""
    if mount_target is not None:
        return (f"cannot mount from stage {go_quote(value)} to {go_quote(mount_target)}, "
                "stage needs to be defined before current command")
    return (f"cannot copy from stage {go_quote(value)}, it needs to be defined before "
            f"current stage {go_quote(stage_name)}")


def build_graph(
    dockerfile: ins.Dockerfile,
    *,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    named_contexts: Sequence[str] = (),
    platform: str | None = None,
) -> BuildGraph:
    """``platform``: the target platform (``--platform``), None for this machine's."""
    build_args = dict(build_args or {})
    escape = dockerfile.escape
    used: set[str] = set()

    # ARGs before the first FROM: usable in FROM lines and re-declarable in stages. The
    # predefined platform args are in this global scope too (a build arg may override them).
    meta: dict[str, str] = {k: build_args.get(k, v) for k, v in platform_args(platform).items()}
    instrs = list(dockerfile.instructions)
    pos = 0
    while pos < len(instrs) and not isinstance(instrs[pos], ins.From):
        node = instrs[pos]
        if not isinstance(node, ins.Arg):
            raise _at(dockerfile, f"{node.keyword} is not allowed before the first FROM "
                      "(only ARG is)", node)
        for name, default in node.args:
            if name in build_args:
                value: str | None = build_args[name]
                used.add(name)
            elif default is not None:
                value = _expand(default, meta, escape, node)
            else:
                value = None
            # A declaration without a value keeps what the name already holds (a predefined
            # platform arg, an earlier global ARG), as BuildKit's buildMetaArgs does.
            if value is not None:
                meta[name] = value
        pos += 1
    global_args = list(meta.items())
    if pos == len(instrs):
        raise GraphError("the Dockerfile has no FROM instruction",
                         hint="every Dockerfile needs a FROM line to start a stage")

    contexts = {c.lower() for c in named_contexts}
    warnings: list[str] = []
    stages: list[Stage] = []
    names: dict[str, int] = {}  # the stages so far: what a FROM word may name
    # Every stage, the last of a name winning: what a --from may name (BuildKit resolves
    # those after all stages are known, so a later stage can be named, and is then refused).
    all_names: dict[str, int] = {}
    froms = [n for n in instrs[pos:] if isinstance(n, ins.From)]
    for i, node in enumerate(froms):
        if node.stage_name:
            all_names[node.stage_name.lower()] = i
    # per stage: (stage named, the step's location, the --from value, a mount's target)
    refs: list[list[tuple[int, ins.Instruction, str, str | None]]] = []
    current: ins.From | None = None
    body: list[ins.Instruction] = []

    def finish() -> None:
        assert current is not None
        index = len(stages)
        base_word = _expand(current.image, meta, escape, current, used)
        if not base_word:
            raise _at(dockerfile, "base name (" + current.image + ") should not be blank",
                      current)
        plat = _expand(current.platform, meta, escape, current, used) if current.platform else None
        if plat == "":
            raise _at(dockerfile, _suggest_var("empty platform value from expression "
                                               f"{current.platform}", current.platform, meta),
                      current)
        if plat is not None:
            try:
                plat = format_platform(parse_platform(plat))
            except ValueError:
                pass  # kept as written: the build refuses it (Solver.platform_of), after the checks
        deps: set[int] = set()
        external: list[str] = []
        # BuildKit looks a FROM word up as written, among stage names it keeps lowercased
        # (addState): `FROM Build` or `FROM Scratch` is an image reference, and an invalid
        # one. A --from value is looked up case-insensitively (findStateByName).
        ref = names.get(base_word)
        if base_word in contexts:
            base = StageBase("context", base_word)
        elif ref is not None:
            base = StageBase("stage", base_word, ref)
            deps.add(ref)
        elif base_word == "scratch":
            base = StageBase("scratch", "scratch")
        else:
            base = StageBase("image", base_word)
            _check_reference(base_word, current, dockerfile)
        # A parent stage's ONBUILD triggers run first in this stage, so a COPY --from among
        # them may name a stage of this Dockerfile, as in BuildKit (errors point at FROM).
        triggers = [(_trigger(n, dockerfile, current), current) for n in stages[ref].instructions
                    if isinstance(n, ins.Onbuild)] if base.kind == "stage" else []
        named: list[tuple[int, ins.Instruction, str, str | None]] = []
        for node, where in [*triggers, *((n, n) for n in body)]:
            if isinstance(node, ins.Copy) and node.from_stage and \
                    _expand(node.from_stage, {}, escape, where) != node.from_stage:
                # as BuildKit: a stage's name is known before any ARG is, so none is expanded
                raise _at(dockerfile, "variable expansion is not supported for --from, define a "
                          "new stage with FROM using ARG from global scope as a workaround", where)
            for value, mount_target in from_refs(node):
                word = _expand(value, meta, escape, where, used)
                dep = None
                if word.lower() not in contexts:
                    try:
                        dep = _stage_index(word, len(froms))
                    except GraphError as exc:
                        raise _at(dockerfile, exc.message, where) from None
                    if dep is None:
                        dep = all_names.get(word.lower())
                if dep is None:
                    if word.lower() not in contexts:
                        _check_reference(word, where, dockerfile)
                    external.append(word)
                else:
                    deps.add(dep)
                    named.append((dep, where, word, mount_target))
        refs.append(named)
        late = next(((late_ref_error(word, target, current.stage_name.lower()
                                      if current.stage_name else f"stage-{index}"), where)
                     for dep, where, word, target in named if dep >= index), None)
        name = current.stage_name.lower() if current.stage_name else None
        if name:
            # A name used twice is a warning (the DuplicateStageName build check): in a later
            # FROM the name means this stage; in --from and --target, the last of that name.
            names[name] = index
        stages.append(Stage(index, name, base, plat, current, tuple(body), frozenset(deps),
                            tuple(external), late))

    for node in instrs[pos:]:
        if isinstance(node, ins.From):
            if current is not None:
                finish()
            current, body = node, []
        else:
            body.append(node)
    finish()

    if target:
        key = target.lower()
        if key not in names:
            known = [s.name for s in stages if s.name]
            match = suggest(target, known, case_sensitive=True)
            raise GraphError(f"target stage {go_quote(target)} could not be found"
                             + (f" (did you mean {match}?)" if match else ""),
                             hint=f"the stages with a name: {', '.join(known)}" if known else
                             "no stage has a name (FROM image AS name)")
        target_index = names[key]
    else:
        target_index = len(stages) - 1
    _refuse_cycles(stages, refs, dockerfile)  # after the target, as BuildKit checks them

    needed: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i in seen:
            return
        seen.add(i)
        for d in sorted(stages[i].deps):
            visit(d)
        needed.append(i)

    visit(target_index)
    for i in sorted(needed):  # BuildKit meets these as it converts the stages, in order
        late_ref = stages[i].late_ref
        if late_ref is not None:
            raise _at(dockerfile, *late_ref)

    # Build args declared in the needed stages count as used (as in docker's warning).
    for i in needed:
        for node in stages[i].instructions:
            if isinstance(node, ins.Arg):
                used.update(name for name, _ in node.args)
    unused = sorted(k for k in build_args if k not in used and k not in PROXY_ARGS
                    and k not in platform_args() and k != CHECK_ARG)
    if unused:
        # docker's own words (its %v of a []string), so scripts that grep for them still work
        warnings.append(UNUSED_ARGS_WARNING.format(" ".join(unused)))

    return BuildGraph(
        stages=tuple(stages),
        target=target_index,
        order=tuple(needed),
        global_args=tuple(global_args),
        build_args=build_args,
        escape=escape,
        warnings=tuple(warnings),
        used_args=frozenset(used),
        names=all_names,
    )


def _refuse_cycles(stages: Sequence[Stage], refs: Sequence[Sequence[tuple[int, ins.Instruction, str, str | None]]],
                   dockerfile: ins.Dockerfile) -> None:
    """BuildKit's check, over every stage (needed or not): no stage may need itself through
    the stages its steps name. The error names the first stage, in Dockerfile order, from
    which such a loop is reached, and points at that stage's step on the way."""
    visited: set[int] = set()
    path: set[int] = set()

    def visit(i: int, first: ins.Instruction | None) -> ins.Instruction | None:
        if i in visited:
            return None
        visited.add(i)
        path.add(i)
        for dep, where, _, _ in sorted(refs[i], key=lambda r: r[0]):
            step = first or where
            if dep in path:
                return step
            found = visit(dep, step)
            if found is not None:
                return found
        path.discard(i)
        return None

    for stage in stages:
        step = visit(stage.index, None)
        if step is not None:
            raise _at(dockerfile, f"circular dependency detected on stage: {stage.display_name}",
                      step)


def from_refs(node: ins.Instruction) -> list[tuple[str, str | None]]:
    """The --from values a step uses, each with its mount's target (None for COPY/ADD
    --from): COPY/ADD --from and RUN --mount from=."""
    out: list[tuple[str, str | None]] = []
    src = getattr(node, "from_stage", None)
    if src:
        out.append((src, None))
    for spec in getattr(node, "mounts", ()) or ():
        fields = {}
        for part in _split_mount(spec):
            key, _, value = part.partition("=")
            fields.setdefault(key.strip().lower(), value.strip())
        if fields.get("from"):
            target = fields.get("target", fields.get("dst", fields.get("destination", "")))
            out.append((fields["from"], target))
    return out


def _split_mount(spec: str) -> list[str]:
    import csv

    return next(csv.reader([spec]), [])
