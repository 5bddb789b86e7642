"""Which build check fires where: BuildKit's rules over a parsed Dockerfile and its graph.

The phases, in BuildKit's order (its frontend reports them in this order as it converts a
Dockerfile): the parse (NoEmptyContinuation; per instruction MaintainerDeprecated,
StageNameCasing, FromAsCasing, InvalidDefinitionDescription), the stages as a whole
(ReservedStageName, DuplicateStageName, ConsistentInstructionCasing, InvalidDefaultArgInFrom),
each stage's FROM line (UndefinedArgInFrom, RedundantTargetPlatform,
FromPlatformFlagConstDisallowed), the base images (InvalidBaseImagePlatform), then each
instruction of the stages the build reaches, with the environment it would see
(UndefinedVar, LegacyKeyValueFormat, SecretsUsedInArgOrEnv, JSONArgsRecommended,
MultipleInstructionsDisallowed, WorkdirRelativePath, ExposeProtoCasing, ExposeInvalidFormat,
CopyIgnoredFile). A ``# check=`` comment right above an instruction adds to the options for
the rules its instruction triggers, as in BuildKit.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import instructions as ins
from .checks import CheckOptions, Linter, comment_options
from .config import DEFAULT_PATH
from .errors import ExpandError
from .expand import expand_heredoc, expand_word, expand_words

__all__ = ["run_checks"]

_WHITESPACE = re.compile("[\t\x0b\x0c\r ]+")
_RESERVED_STAGE_NAMES = ("context", "scratch")
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
# compiled when first used (``re`` caches them): most builds never need them
_SECRET = (r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
           r"(?:_|$)")
_NOT_SECRET = r"(?:_|^)(?:public|file|version)(?:_|$)"
BaseConfig = Callable[[Any], "Mapping[str, Any] | None"]


class _Names(list):  # type: ignore[type-arg]
    """The variable names an expansion looked up, in order (``expand``'s ``used``)."""

    def add(self, name: str) -> None:
        if name not in self:
            self.append(name)


def keyword_of(node: ins.Instruction) -> str:
    """The instruction's keyword as written (``from``, ``From``, ``FROM``)."""
    return _WHITESPACE.split(node.original.lstrip(" \t"), maxsplit=1)[0] or node.keyword


def _consistent(word: str) -> bool:
    return word == word.lower() or word == word.upper()


def _suggest(name: str, options: Iterable[str]) -> str | None:
    from .parse_typed import suggest

    return suggest(name, list(options), case_sensitive=True)


class _Comments:
    """The comments right above each instruction, as BuildKit's parser keeps them: a
    ``#`` line adds its text, an empty ``#`` clears them, blank lines do not; the parser
    directives at the top are not comments."""

    def __init__(self, dockerfile: ins.Dockerfile) -> None:
        self.lines = dockerfile.lines
        self.first = len(dockerfile.directives) + 1  # the first line after the directives
        self.ends = {}
        previous = 0
        for node in dockerfile.instructions:
            self.ends[id(node)] = previous
            previous = node.range.end

    def before(self, node: ins.Instruction) -> list[str]:
        out: list[str] = []
        start = max(self.ends.get(id(node), node.range.start - 1) + 1, self.first)
        for n in range(start, node.range.start):
            line = self.lines[n - 1] if n <= len(self.lines) else ""
            if not line.lstrip(" \t\r\n\x0b\x0c").startswith("#"):
                continue
            text = line[1:].strip()  # BuildKit drops the first character, then trims
            if text:
                out.append(text)
            else:
                out = []
        return out


class _Run:
    """One run of the checks: the linter, the Dockerfile, and each instruction's options."""

    def __init__(self, linter: Linter, dockerfile: ins.Dockerfile) -> None:
        self.linter = linter
        self.dockerfile = dockerfile
        self.escape = dockerfile.escape
        self.comments = _Comments(dockerfile)
        self._options: dict[int, CheckOptions] = {}

    def options(self, node: ins.Instruction | None) -> CheckOptions:
        base = self.linter.options
        if node is None:
            return base
        key = id(node)
        if key not in self.comments.ends:
            return base  # an ONBUILD trigger: no comments of its own
        if key not in self._options:
            extra = comment_options(self.comments.before(node))
            self._options[key] = base.merged(extra) if extra is not None else base
        return self._options[key]

    def warn(self, rule: str, where: ins.Instruction, message: str, *,
             own: ins.Instruction | None = None) -> None:
        """Report ``rule`` at ``where``; ``own`` is the instruction whose comments count
        (None: only the file's options)."""
        self.linter.run(rule, where.range.start, message, end=where.range.end,
                        options=self.options(own))

    def warn_at(self, rule: str, at: _At, message: str) -> None:
        self.warn(rule, at.where, message, own=at.own)


# -- the parse -------------------------------------------------------------------------
def _parse_phase(run: _Run, graph: Any) -> None:
    from .parse_args import node_from_line

    for line in run.dockerfile.empty_continuations:
        run.linter.run("NoEmptyContinuation", line, "Empty continuation line")
    for node in run.dockerfile.instructions:
        if isinstance(node, ins.Maintainer):
            run.warn("MaintainerDeprecated", node,
                     "Maintainer instruction is deprecated in favor of using label", own=node)
        elif isinstance(node, ins.From):
            args = node_from_line(node.original, run.escape).args
            if len(args) == 3 and args[2] != args[2].lower():
                run.warn("StageNameCasing", node, f"Stage name '{args[2]}' should be lowercase",
                         own=node)
            command = keyword_of(node)
            if len(args) >= 3 and _consistent(command):
                want = args[1].lower() if command == command.lower() else args[1].upper()
                if args[1] != want:
                    run.warn("FromAsCasing", node,
                             f"'{args[1]}' and '{command}' keywords' casing do not match", own=node)
            if node.stage_name:
                _definition_description(run, node, "FROM", [node.stage_name])
        elif isinstance(node, ins.Arg):
            _definition_description(run, node, "ARG", [k for k, _ in node.args])


def _definition_description(run: _Run, node: ins.Instruction, what: str, keys: list[str]) -> None:
    comments = run.comments.before(node)
    if not comments or not keys or comments[-1].split(" ")[0] in keys:
        return
    example = keys[0] if len(keys) == 1 else "<arg_key>"
    run.warn("InvalidDefinitionDescription", node,
             f"Comment for {what} should follow the format: `# {example} <description>`", own=node)


def _stages_phase(run: _Run, graph: Any, meta: Sequence[ins.Arg], defaults: Mapping[str, str]) -> None:
    seen: set[str] = set()
    for stage in graph.stages:
        name = stage.from_.stage_name
        if name:
            if name in _RESERVED_STAGE_NAMES:
                run.warn("ReservedStageName", stage.from_,
                         f'Stage name should not use the same name as reserved stage "{name}"')
            if name in seen:
                run.warn("DuplicateStageName", stage.from_,
                         f'Duplicate stage name "{name}", stage names should be unique')
            seen.add(name)

    # ConsistentInstructionCasing: the ARGs before the first FROM do not count
    words = [(stage.from_, keyword_of(stage.from_)) for stage in graph.stages]
    for stage in graph.stages:
        words.extend((node, keyword_of(node)) for node in stage.instructions)
    lower = sum(1 for _, w in words if _consistent(w) and w == w.lower())
    upper = sum(1 for _, w in words if _consistent(w) and w != w.lower())
    majority_lower = lower > upper
    for node, word in words:
        want = "lowercase" if majority_lower else "uppercase"
        if word != (word.lower() if majority_lower else word.upper()):
            run.warn("ConsistentInstructionCasing", node,
                     f"Command '{word}' should match the case of the command majority ({want})")

    # InvalidDefaultArgInFrom: the FROM names with the ARGs' defaults only
    env = dict(defaults)
    try:
        for arg in meta:
            for key, default in arg.args:
                if default is not None:
                    env[key] = expand_word(default, env, escape=run.escape)
        for stage in graph.stages:
            name = expand_word(stage.from_.image, env, escape=run.escape)
            if not _valid_reference(name):
                run.warn("InvalidDefaultArgInFrom", stage.from_,
                         f"Default value for ARG {stage.from_.image} results in empty or invalid "
                         "base image name")
    except ExpandError:
        pass  # the build reports it


def _valid_reference(name: str) -> bool:
    if name == "scratch":  # as written: BuildKit parses "Scratch" as a reference, and fails
        return True
    from .reference import ImageRef, InvalidReference

    try:
        ImageRef.parse(name)
    except (InvalidReference, ValueError):
        return False
    return True


def _expand(word: str, env: Mapping[str, str], escape: str) -> tuple[str, _Names]:
    names = _Names()
    return expand_word(word, env, escape=escape, used=names), names  # type: ignore[arg-type]


def _from_phase(run: _Run, graph: Any, global_env: Mapping[str, str], arg_keys: set[str]) -> None:
    for stage in graph.stages:
        node = stage.from_
        try:
            _, names = _expand(node.image, global_env, run.escape)
        except ExpandError:
            names = _Names()
        _undefined_in_from(run, node, names, global_env, arg_keys)
        if not node.platform:
            continue
        try:
            result, names = _expand(node.platform, global_env, run.escape)
        except ExpandError:
            continue
        _undefined_in_from(run, node, names, global_env, arg_keys)
        matched = [n for n in names if n in global_env]
        unmatched = [n for n in names if n not in global_env]
        if len(matched) == 1 and not unmatched and matched[0] == "TARGETPLATFORM" \
                and result == global_env["TARGETPLATFORM"]:
            run.warn("RedundantTargetPlatform", node,
                     f"Setting platform to predefined {node.platform} in FROM is redundant as "
                     "this is the default behavior", own=node)
        if not names:
            parsed = _parse_platform(result)
            name = node.stage_name or ""
            if parsed is not None and parsed[0] not in name and parsed[1] not in name:
                run.warn("FromPlatformFlagConstDisallowed", node,
                         f'FROM --platform flag should not use constant value "{result}"', own=node)


def _undefined_in_from(run: _Run, node: ins.From, names: Sequence[str],
                       env: Mapping[str, str], arg_keys: set[str]) -> None:
    for name in names:
        if name in env or name in arg_keys:
            continue
        hint = _suggest(name, arg_keys)
        message = f"FROM argument '{name}' is not declared"
        run.warn("UndefinedArgInFrom", node, message + (f" (did you mean {hint}?)" if hint else ""),
                 own=node)


def _parse_platform(text: str) -> tuple[str, str] | None:
    """(os, architecture) of a platform string, None if containerd would refuse it."""
    from .hostplatform import parse_platform

    try:
        os_name, arch, _ = parse_platform(text)
    except ValueError:
        return None
    return os_name, arch


def normalize_platform(os_name: str, arch: str, variant: str = "") -> str:
    """containerd's FormatAll(Normalize(p)) for the platforms a Linux host meets."""
    os_name = os_name.lower()
    arch = arch.lower()
    if arch in ("x86_64", "x86-64"):
        arch, variant = "amd64", ""
    elif arch == "aarch64":
        arch = "arm64"
    elif arch in ("armhf", "armel"):
        variant = "v7" if arch == "armhf" else "v6"
        arch = "arm"
    elif arch == "i386":
        arch = "386"
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    elif arch == "arm":
        variant = {"": "v7", "5": "v5", "6": "v6", "7": "v7", "8": "v8"}.get(variant, variant)
    return f"{os_name}/{arch}" + (f"/{variant}" if variant else "")


# -- the base images ---------------------------------------------------------------------
def _base_platform_phase(run: _Run, graph: Any, reached: Sequence[int], base_config: BaseConfig,
                         host: str) -> None:
    for index in reached:
        stage = graph.stages[index]
        if stage.base.kind != "image":
            continue
        config = base_config(stage)
        if not config or not config.get("architecture"):
            continue
        actual = normalize_platform(config.get("os", ""), config["architecture"],
                                    config.get("variant", ""))
        wanted = stage.platform or host
        expected_parts = wanted.split("/") + ["", ""]
        expected = normalize_platform(expected_parts[0], expected_parts[1], expected_parts[2])
        if actual.split("/")[:2] != expected.split("/")[:2]:
            run.warn("InvalidBaseImagePlatform", stage.from_,
                     f'Base image {stage.base.name} was pulled with platform "{actual}", '
                     f'expected "{expected}" for current build')


# -- each instruction of the reached stages ------------------------------------------------
class _State:
    """What a stage's instructions see: its environment (names are what matters), the ARGs
    declared, whether a SHELL is set, whether a WORKDIR was set in this Dockerfile."""

    __slots__ = ("args", "env", "known", "shell", "workdir_set")

    def __init__(self, env: dict[str, str], *, known: bool = True, shell: bool = False) -> None:
        self.env = env
        self.args: list[str] = []
        self.known = known  # False: the base image's environment could not be read
        self.shell = shell
        self.workdir_set = False

    def copy(self) -> _State:
        other = _State(dict(self.env), known=self.known, shell=self.shell)
        other.args = list(self.args)
        other.workdir_set = self.workdir_set
        return other


class _Dispatch:
    def __init__(self, run: _Run, build_args: Mapping[str, str], global_env: Mapping[str, str],
                 ignore: Any) -> None:
        self.run = run
        self.build_args = build_args
        self.global_env = global_env
        self.ignore = ignore

    # UndefinedVar -------------------------------------------------------------------
    def words(self, state: _State, at: _At, words: Iterable[str | None], *,
              heredoc: bool = False) -> list[str]:
        """The words expanded in the stage's environment, reporting undefined variables."""
        out = []
        for word in words:
            if not word:
                out.append(word or "")
                continue
            names = _Names()
            if heredoc:
                out.append(expand_heredoc(word, state.env, used=names))  # type: ignore[arg-type]
            else:
                out.append(expand_word(word, state.env, escape=self.run.escape,
                                       used=names))  # type: ignore[arg-type]
            self.undefined(state, at, names)
        return out

    def undefined(self, state: _State, at: _At, names: Sequence[str]) -> None:
        if not state.known:
            return
        for name in names:
            if name in state.env or name in state.args or name in _NON_ENV_ARGS:
                continue
            hint = _suggest(name, state.env)
            message = f"Usage of undefined variable '${name}'"
            self.run.warn_at("UndefinedVar", at, message + (f" (did you mean ${hint}?)" if hint else ""))

    # one stage -------------------------------------------------------------------------
    def stage(self, state: _State, nodes: Sequence[tuple[ins.Instruction, ins.Instruction | None]]) -> None:
        """``nodes``: (instruction, where to report it; None: at itself)."""
        trackers: dict[str, ins.Instruction] = {}
        for node, where in nodes:
            self.instruction(state, node, where or node, trackers)

    def instruction(self, state: _State, node: ins.Instruction, where: ins.Instruction,
                    trackers: dict[str, ins.Instruction]) -> None:
        run = self.run
        loc = _At(where, node)
        name = keyword_of(node)
        if isinstance(node, ins.Arg):
            for key, default in node.args:
                _secret(run, loc, "ARG", key)
                value: str | None = None
                if key in self.build_args:
                    value = self.build_args[key]
                elif default is not None:
                    names = _Names()
                    value = expand_word(default, state.env, escape=run.escape,
                                        used=names)  # type: ignore[arg-type]
                    self.undefined(state, loc, names)
                elif key in self.global_env:
                    value = self.global_env[key]
                if value is not None and key not in _NON_ENV_ARGS:
                    state.env[key] = value
                state.args.append(key)
        elif isinstance(node, (ins.Env, ins.Label)):
            flat = self.words(state, loc, [w for pair in node.pairs for w in pair])
            legacy = _legacy_pairs(node, run.escape)
            for i in range(len(node.pairs)):
                key, value = flat[2 * i], flat[2 * i + 1]
                if i < len(legacy) and legacy[i]:
                    run.warn_at("LegacyKeyValueFormat", loc,
                                f'"{name} key=value" should be used instead of legacy "{name} key '
                                f'value" format')
                if isinstance(node, ins.Env):
                    _secret(run, loc, "ENV", key)
                    state.env[key] = value
        elif isinstance(node, (ins.Cmd, ins.Entrypoint, ins.Healthcheck)):
            kind = type(node).__name__
            previous = trackers.get(kind)
            if previous is not None:
                run.warn_at("MultipleInstructionsDisallowed", _At(previous, node),
                            f"Multiple {name} instructions should not be used in the same stage "
                            "because only the last one will be used")
            trackers[kind] = where
            if not isinstance(node, ins.Healthcheck) and node.prepend_shell and not state.shell \
                    and state.known:
                run.warn_at("JSONArgsRecommended", loc, f"JSON arguments recommended for {name} to "
                            "prevent unintended behavior related to OS signals")
        elif isinstance(node, ins.Shell):
            state.shell = bool(node.shell)
        elif isinstance(node, ins.Workdir):
            path = self.words(state, loc, [node.path])[0]
            if not state.workdir_set and not path.startswith("/"):
                run.warn_at("WorkdirRelativePath", loc,
                            f'Relative workdir "{path}" can have unexpected results if the base '
                            "image changes")
            state.workdir_set = True
        elif isinstance(node, ins.User):
            self.words(state, loc, [node.user])
        elif isinstance(node, ins.Volume):
            self.words(state, loc, node.paths)
        elif isinstance(node, ins.StopSignal):
            self.words(state, loc, [node.signal])
        elif isinstance(node, ins.Run):
            from .graph import _split_mount

            values = [p.partition("=")[2] for spec in node.mounts for p in _split_mount(spec)
                      if "=" in p]
            self.words(state, loc, values)
        elif isinstance(node, (ins.Copy, ins.Add)):
            extra = [node.chown, node.chmod]
            if isinstance(node, ins.Add):
                extra.append(node.checksum)
            self.words(state, loc, extra)
            sources = self.words(state, loc, node.sources)
            self.words(state, loc, [node.dest])
            self.words(state, loc, [d.content for d in node.heredocs if d.expand], heredoc=True)
            if self.ignore is not None and not (isinstance(node, ins.Copy) and node.from_stage):
                for src in sources:
                    if isinstance(node, ins.Add) and src.startswith(("http://", "https://")):
                        continue
                    self.ignored(loc, "Add" if isinstance(node, ins.Add) else "Copy", src)
        elif isinstance(node, ins.Expose):
            for raw in node.ports:
                for port in expand_words(raw, state.env, escape=run.escape):
                    _expose(run, loc, port)

    def ignored(self, loc: _At, what: str, src: str) -> None:
        from .dockerignore import go_clean

        if self.ignore.has_exceptions:
            return  # too hard to tell statically, as BuildKit says
        path = go_clean(src)
        if path in (".", "/"):
            # the context root itself: only when a pattern leaves out everything in it
            ignored = any(r.pattern in ("*", "**", "**/*") for r in self.ignore.rules)
        else:
            ignored = self.ignore.excluded(path.lstrip("/"))
        if ignored:
            self.run.warn_at("CopyIgnoredFile", loc,
                             f'Attempting to {what} file "{path}" that is excluded by .dockerignore')


class _At:
    """Where a dispatched instruction reports: its own line, or (an ONBUILD trigger) the
    FROM line of the stage that runs it; and whose comments count."""

    __slots__ = ("own", "where")

    def __init__(self, where: ins.Instruction, own: ins.Instruction) -> None:
        self.where = where
        self.own = own


def _secret(run: _Run, loc: _At, what: str, key: str) -> None:
    if re.search(_SECRET, key, re.IGNORECASE) and not re.search(_NOT_SECRET, key, re.IGNORECASE):
        run.warn_at("SecretsUsedInArgOrEnv", loc,
                    f'Do not use ARG or ENV instructions for sensitive data ({what} "{key}")')


def _legacy_pairs(node: ins.Instruction, escape: str) -> list[bool]:
    """Per pair of an ENV/LABEL: written ``KEY value`` (no ``=``)?"""
    from .parse_args import LineError, node_from_line

    try:
        args = node_from_line(node.original, escape).args
    except LineError:
        return []
    return [args[i + 2] == "" for i in range(0, len(args) - 2, 3)]


def _expose(run: _Run, loc: _At, raw: str) -> None:
    parts = raw.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    port, _, proto = container.partition("/")
    if not port or proto.lower() not in ("", "tcp", "udp", "sctp"):
        return  # an error for the build to report
    if proto != proto.lower():
        run.warn_at("ExposeProtoCasing", loc,
                    f"Defined protocol '{raw}' in EXPOSE instruction should be lowercase")
    if ip or host:
        run.warn_at("ExposeInvalidFormat", loc,
                    "EXPOSE instruction should not define an IP address or host-port mapping, "
                    f"found '{raw}'")


def _base_state(stage: Any, states: Mapping[int, _State], base_config: BaseConfig | None) -> tuple[_State, list[ins.Instruction]]:
    """The state a stage starts from, and the ONBUILD triggers it runs first."""
    kind = stage.base.kind
    if kind == "stage":
        parent = states.get(stage.base.stage)
        state = parent.copy() if parent is not None else _State({}, known=False)
        return state, []  # the parent's triggers: see _dispatch_phase
    if kind == "scratch":
        return _State({"PATH": DEFAULT_PATH}), []
    config = base_config(stage) if base_config is not None else None
    if config is None:
        return _State({"PATH": DEFAULT_PATH}, known=False), []
    cfg = config.get("config") or {}
    env: dict[str, str] = {}
    for item in cfg.get("Env") or ():
        key, _, value = str(item).partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    triggers: list[ins.Instruction] = []
    from .errors import BuildError
    from .parse import parse_dockerfile

    for text in cfg.get("OnBuild") or ():
        try:
            triggers.extend(parse_dockerfile(str(text) + "\n").instructions)
        except BuildError:
            continue  # a broken trigger is the build's error to report
    return _State(env, shell=bool(cfg.get("Shell"))), triggers


def _dispatch_phase(run: _Run, graph: Any, reached: Sequence[int], build_args: Mapping[str, str],
                    global_env: Mapping[str, str], base_config: BaseConfig | None, ignore: Any) -> None:
    dispatch = _Dispatch(run, build_args, global_env, ignore)
    states: dict[int, _State] = {}
    for index in sorted(reached):
        stage = graph.stages[index]
        state, triggers = _base_state(stage, states, base_config)
        if stage.base.kind == "stage":
            parent = graph.stages[stage.base.stage]
            triggers = [n.instruction for n in parent.instructions
                        if isinstance(n, ins.Onbuild) and n.instruction is not None]
        nodes: list[tuple[ins.Instruction, ins.Instruction | None]] = [(t, stage.from_) for t in triggers]
        nodes.extend((n, None) for n in stage.instructions)
        dispatch.stage(state, nodes)
        states[index] = state


# -- the entry point -------------------------------------------------------------------------
def run_checks(linter: Linter, dockerfile: ins.Dockerfile, graph: Any, *,
               build_args: Mapping[str, str], reached: Sequence[int],
               base_config: BaseConfig | None = None, ignore: Any = None,
               target: str | None = None, platform: str | None = None) -> None:
    """Run every rule over ``dockerfile`` and its ``graph`` into ``linter``. ``reached``:
    the stages whose instructions are checked (those the build needs; every stage for
    `--check` without a target); ``base_config(stage)``: the config of a stage's base
    image (None if unknown); ``ignore``: the context's .dockerignore matcher."""
    from .graph import platform_args

    run = _Run(linter, dockerfile)
    meta: list[ins.Arg] = []
    for node in dockerfile.instructions:
        if isinstance(node, ins.From):
            break
        if isinstance(node, ins.Arg):
            meta.append(node)
    plat = platform_args(platform)  # the target platform (--platform), or this machine's
    extra = {"BUILDOSVERSION": "", "TARGETOSVERSION": "",
             "TARGETSTAGE": target or (graph.stages[-1].name or "default")}
    defaults = {**{k: build_args.get(k, v) for k, v in plat.items()},
                **{k: build_args.get(k, v) for k, v in extra.items()}}
    global_env = {**extra, **{k: v for k, v in graph.global_args if v is not None}}
    arg_keys = set(global_env) | {k for a in meta for k, _ in a.args}
    try:
        _parse_phase(run, graph)
        _stages_phase(run, graph, meta, defaults)
        _from_phase(run, graph, global_env, arg_keys)
        if base_config is not None:
            _base_platform_phase(run, graph, reached, base_config, plat["TARGETPLATFORM"])
        _dispatch_phase(run, graph, reached, build_args, global_env, base_config, ignore)
    except ExpandError:
        pass  # the build fails there and says why; the checks stop as BuildKit's do
