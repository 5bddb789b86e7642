"""Untyped Node -> typed Instruction, with the checks of buildkit's instructions package.

Owns what each instruction accepts (its --flags, how many arguments, the HEALTHCHECK options,
the FROM stage name, ONBUILD triggers) and the error messages when it does not.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .errors import SourceRange
from .instructions import (
    INSTRUCTION_NAMES,
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from .parse_args import LineError, Node
from .parse_go import GO_FALSE, GO_TRUE, go_lower, go_quote, go_trim_space, parse_duration
from .parse_heredoc import ShellSyntaxError, parse_heredoc_word

__all__ = ["suggest", "to_instruction"]

# compiled where used (re keeps them): not every Dockerfile names a stage or has ONBUILD
_STAGE_NAME = r"[a-z][a-z0-9-_.]*\Z"
_ONBUILD_PREFIX = r"(?i)^[\t\n\x0c\r ]*ONBUILD[\t\n\x0c\r ]*"
_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(value: str, options: tuple[str, ...] | list[str], *, case_sensitive: bool) -> str | None:
    """The closest option within edit distance 2 (buildkit's suggest.Search), cased like value."""
    probe = value if case_sensitive else value.lower()
    if len(probe) > 64:
        return None
    best, best_dist = None, 3
    for opt in sorted(options):
        cand = opt if case_sensitive else opt.lower()
        if cand == probe:
            return None
        dist = _levenshtein(probe, cand)
        if dist < best_dist:
            best, best_dist = cand, dist
    if best is None or case_sensitive:
        return best
    if value == value.lower():
        return best.lower()
    if value == value.upper():
        return best.upper()
    return best


class _Flags:
    """BFlags: the flags one instruction declares, checked against what was written."""

    def __init__(self, written: tuple[str, ...], declared: dict[str, str] | None = None) -> None:
        self.written = written
        self.declared = declared or {}
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}

    def parse(self) -> _Flags:
        used: set[str] = set()
        for arg in self.written:
            if arg == "--":
                break
            if not arg.startswith("--"):
                raise LineError(f"arg should start with -- : {arg}")
            flag_name, has_value, value = arg.partition("=")
            name = flag_name[2:]
            kind = self.declared.get(name)
            if kind is None:
                message = f"unknown flag: {flag_name}"
                match = suggest(name, list(self.declared), case_sensitive=True)
                raise LineError(message + (f" (did you mean {match}?)" if match else ""))
            if name in used and kind != "strings":
                raise LineError(f"duplicate flag specified: {flag_name}")
            used.add(name)
            if kind == "bool":
                if has_value and value == "":
                    raise LineError(f"missing a value on flag: {flag_name}")
                if value.lower() not in ("true", "false", ""):
                    raise LineError(f"expecting boolean value for flag {flag_name}, not: {value}")
                self.values[name] = "false" if value.lower() == "false" else "true"
            elif not has_value:
                raise LineError(f"missing a value on flag: {flag_name}")
            elif kind == "string":
                self.values[name] = value
            else:
                self.lists.setdefault(name, []).append(value)
        return self

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def on(self, name: str) -> bool:
        return self.values.get(name) == "true"

    def many(self, name: str) -> tuple[str, ...]:
        return tuple(self.lists.get(name, ()))


def _common(node: Node, rng: SourceRange) -> dict[str, object]:
    return {"range": rng, "keyword": node.name.upper(), "original": node.original,
            "flags": node.flags}


def _command_line(node: Node) -> tuple[tuple[str, ...], bool]:
    """handleJSONArgs: the exec form's words, or the shell form's one string."""
    if not node.args:
        return (), not node.json
    if node.json:
        return node.args, False
    return (" ".join(node.args),), True


def _pairs(node: Node, what: str) -> tuple[tuple[str, str], ...]:
    args = node.args
    if not args:
        raise LineError(f"{what} requires at least one argument")
    out = []
    for i in range(0, len(args) - 2, 3):
        if not args[i]:
            raise LineError(f"{what} names can not be blank")
        out.append((args[i], args[i + 1]))
    return tuple(out)


def _one(node: Node, what: str) -> str:
    if len(node.args) != 1:
        raise LineError(f"{what} requires exactly one argument")
    return node.args[0]


def _sources(node: Node, what: str) -> tuple[tuple[str, ...], str, tuple[Heredoc, ...]]:
    if len(node.args) < 2:
        raise LineError(f"{what} requires at least two arguments, but only one was provided. "
                        "Destination could not be determined")
    *srcs, dest = node.args
    try:
        if parse_heredoc_word(dest) is not None:
            raise LineError(f"{what} cannot accept a heredoc as a destination")
        by_name = {h.name: h for h in node.heredocs}
        paths: list[str] = []
        docs: list[Heredoc] = []
        for src in srcs:
            word = parse_heredoc_word(src)
            if word is None:
                paths.append(src)
                continue
            body = by_name.get(word.name)
            docs.append(Heredoc(word.name, body.content if body else "", word.expand, word.chomp,
                                word.fd))
    except ShellSyntaxError as exc:
        raise LineError(str(exc)) from None
    return tuple(paths), dest, tuple(docs)


def _from(node: Node, rng: SourceRange) -> From:
    args = node.args
    stage = None
    if len(args) == 3 and len(args[1]) == 2 and args[1][0] in "aA" and args[1][1] in "sS\u017f":
        stage = go_lower(args[2])
        if not re.match(_STAGE_NAME, stage):
            raise LineError(f"invalid name for build stage: {go_quote(args[2])}, name can't start "
                            "with a number or contain symbols")
    elif len(args) != 1:
        raise LineError("FROM requires either one or three arguments")
    flags = _Flags(node.flags, {"platform": "string"}).parse()
    return From(**_common(node, rng), image=args[0], stage_name=stage,  # type: ignore[arg-type]
                platform=flags.get("platform"))


def _run(node: Node, rng: SourceRange) -> Run:
    flags = _Flags(node.flags, {"mount": "strings", "network": "string",
                                "security": "string", "device": "strings"}).parse()
    network, security = flags.get("network"), flags.get("security")
    if network is not None and network not in _NETWORKS:
        raise LineError(f'invalid network mode "{network}"')
    if security is not None and security not in _SECURITY:
        raise LineError(f'security "{security}" is not valid')
    for device in flags.many("device"):
        parse_device(device)
    for mount in flags.many("mount"):
        _check_mount(mount)
    command, shell = _command_line(node)
    return Run(**_common(node, rng), command=command, prepend_shell=shell,  # type: ignore[arg-type]
               heredocs=node.heredocs, mounts=flags.many("mount"), network=network,
               security=security, devices=flags.many("device"))


def csv_fields(value: str, what: str) -> list[str]:
    """The comma-separated fields of a flag value (quotes as in CSV), as BuildKit splits
    --mount and --device values; a LineError names ``what`` when the CSV is broken."""
    import csv  # only a step with such a flag pays for loading it

    try:
        return next(csv.reader([value], strict=True), [])
    except csv.Error as exc:
        raise LineError(f"failed to parse csv {what}: {exc}") from None


def _check_mount(value: str) -> None:
    """What BuildKit checks of a ``RUN --mount`` value when it parses the Dockerfile, in
    every stage: the value is CSV, and ``from`` names a stage or image without a variable
    (the stage graph is known before any ARG). Every other field waits until the step is
    built, with its variables expanded (``steps.parse_mount_flag``)."""
    for field in csv_fields(value, "mounts"):
        key, eq, val = field.partition("=")
        if eq and key.lower() == "from" and "$" in val[:-1]:
            raise LineError("'from' doesn't support variable expansion, define alias stage instead")


def parse_device(value: str) -> tuple[str, bool]:
    """A ``RUN --device`` value, as BuildKit's ParseDevice reads it: (CDI name, required)."""
    name, required = "", False
    for field in csv_fields(value, "devices"):
        key, eq, val = field.partition("=")
        key = key.lower()
        if not eq:
            if key == "required":
                required = True
            elif not name:
                name = field
            else:
                raise LineError(f"invalid field '{field}' must be a key=value pair")
        elif key == "name":
            if name:
                raise LineError(f"device name already set to {name}")
            name = val
        elif key == "required":
            if val not in GO_TRUE | GO_FALSE:
                raise LineError(f"invalid value for {key}: {val}")
            required = val in GO_TRUE
        elif not name:
            name = field
        else:
            match = suggest(key, ["name", "required"], case_sensitive=True)
            raise LineError(f"unexpected key '{key}' in '{field}'"
                            + (f" (did you mean {match}?)" if match else ""))
    return name, required


def _copy(node: Node, rng: SourceRange) -> Copy:
    flags = _Flags(node.flags, {"chown": "string", "from": "string", "chmod": "string",
                                "link": "bool", "exclude": "strings", "parents": "bool"}).parse()
    srcs, dest, docs = _sources(node, "COPY")
    return Copy(**_common(node, rng), sources=srcs, dest=dest, heredocs=docs,  # type: ignore[arg-type]
                from_stage=flags.get("from") or None, chown=flags.get("chown") or None,
                chmod=flags.get("chmod") or None, link=flags.on("link"),
                parents=flags.on("parents"), excludes=flags.many("exclude"))


def _add(node: Node, rng: SourceRange) -> Add:
    flags = _Flags(node.flags, {"chown": "string", "chmod": "string", "link": "bool",
                                "keep-git-dir": "bool", "checksum": "string", "unpack": "bool",
                                "exclude": "strings"}).parse()
    srcs, dest, docs = _sources(node, "ADD")
    unpack = flags.get("unpack")
    return Add(**_common(node, rng), sources=srcs, dest=dest, heredocs=docs,  # type: ignore[arg-type]
               chown=flags.get("chown") or None, chmod=flags.get("chmod") or None,
               link=flags.on("link"), checksum=flags.get("checksum") or None,
               keep_git_dir=flags.on("keep-git-dir"),
               unpack=None if unpack is None else unpack == "true", excludes=flags.many("exclude"))


def _seconds(flags: _Flags, name: str) -> float | None:
    value = flags.get(name)
    if not value:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise LineError(str(exc)) from None
    if seconds == 0:
        return None
    if seconds < 0.001:
        raise LineError(f'Interval "{name}" cannot be less than 1ms')
    return seconds


def _healthcheck(node: Node, rng: SourceRange) -> Healthcheck:
    if not node.args:
        raise LineError("HEALTHCHECK requires at least one argument")
    typ, args = node.args[0].upper(), node.args[1:]
    common = _common(node, rng)
    if typ == "NONE":
        if args:
            raise LineError("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**common, test=("NONE",))  # type: ignore[arg-type]
    flags = _Flags(node.flags, dict.fromkeys(
        ("interval", "timeout", "start-period", "start-interval", "retries"), "string")).parse()
    if typ != "CMD":
        raise LineError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    if not args:
        raise LineError("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *args) if node.json else ("CMD-SHELL", " ".join(args))
    times = {key: _seconds(flags, key.replace("_", "-"))
             for key in ("interval", "timeout", "start_period", "start_interval")}
    retries = None
    if flags.get("retries"):
        text = flags.get("retries") or ""
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise LineError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
        retries = int(text)
        if not -(1 << 31) <= retries < (1 << 31):
            raise LineError(f'strconv.ParseInt: parsing "{text}": value out of range')
        if retries < 0:
            raise LineError(f"--retries cannot be negative ({retries})")
    return Healthcheck(**common, test=test, retries=retries, **times)  # type: ignore[arg-type]


def _onbuild(node: Node, rng: SourceRange) -> Onbuild:
    if node.child is None:
        raise LineError("ONBUILD requires at least one argument")
    _Flags(node.flags).parse()
    trigger = go_trim_space(node.child.keyword).upper()
    if trigger == "ONBUILD":
        raise LineError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise LineError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = re.sub(_ONBUILD_PREFIX, "", node.original, count=1)
    for doc in node.heredocs:
        expression += "\n" + doc.content + doc.name
    child = node.child
    if node.heredocs and not child.heredocs:
        from dataclasses import replace

        child = replace(child, heredocs=node.heredocs)
    try:
        trigger_node: Instruction | None = to_instruction(child, rng)
        error = ""
    except LineError as exc:
        trigger_node, error = None, str(exc)
    return Onbuild(**_common(node, rng), expression=expression,  # type: ignore[arg-type]
                   instruction=trigger_node, error=error)


def _simple(node: Node, rng: SourceRange) -> Instruction:
    name = node.name
    common = _common(node, rng)
    if name in ("env", "label"):
        _Flags(node.flags).parse()
        pairs = _pairs(node, name.upper())
        return (Env if name == "env" else Label)(**common, pairs=pairs)  # type: ignore[arg-type]
    if name == "maintainer":
        value = _one(node, "MAINTAINER")
        _Flags(node.flags).parse()
        return Maintainer(**common, name=value)  # type: ignore[arg-type]
    if name in ("workdir", "user"):
        value = _one(node, name.upper())
        _Flags(node.flags).parse()
        if name == "user":
            return User(**common, user=value)  # type: ignore[arg-type]
        return Workdir(**common, path=value)  # type: ignore[arg-type]
    if name == "stopsignal":  # buildkit does not check STOPSIGNAL's flags
        return StopSignal(**common, signal=_one(node, "STOPSIGNAL"))  # type: ignore[arg-type]
    if name in ("cmd", "entrypoint"):
        _Flags(node.flags).parse()
        command, shell = _command_line(node)
        cls = Cmd if name == "cmd" else Entrypoint
        return cls(**common, command=command, prepend_shell=shell)  # type: ignore[arg-type]
    if name == "shell":
        _Flags(node.flags).parse()
        if not node.args:
            raise LineError("SHELL requires at least one argument")
        if not node.json:
            raise LineError("SHELL requires the arguments to be in JSON form")
        return Shell(**common, shell=node.args)  # type: ignore[arg-type]
    if name == "expose":
        if not node.args:
            raise LineError("EXPOSE requires at least one argument")
        _Flags(node.flags).parse()
        return Expose(**common, ports=tuple(sorted(node.args)))  # type: ignore[arg-type]
    if name == "volume":
        if not node.args:
            raise LineError("VOLUME requires at least one argument")
        _Flags(node.flags).parse()
        paths = tuple(go_trim_space(v) for v in node.args)
        if "" in paths:
            raise LineError("VOLUME specified can not be an empty string")
        return Volume(**common, paths=paths)  # type: ignore[arg-type]
    if name == "arg":  # buildkit does not check ARG's flags either
        if not node.args:
            raise LineError("ARG requires at least one argument")
        args: list[tuple[str, str | None]] = []
        for word in node.args:
            if "=" in word:
                key, value = word.split("=", 1)
                if not key:
                    raise LineError("ARG names can not be blank")
                args.append((key, value))
            else:
                args.append((word, None))
        return Arg(**common, args=tuple(args))  # type: ignore[arg-type]
    message = f"unknown instruction: {node.keyword}"
    match = suggest(node.keyword, INSTRUCTION_NAMES, case_sensitive=False)
    raise LineError(message + (f" (did you mean {match}?)" if match else ""))


_TYPED: dict[str, Callable[[Node, SourceRange], Instruction]] = {
    "from": _from, "run": _run, "copy": _copy, "add": _add, "healthcheck": _healthcheck,
    "onbuild": _onbuild,
}


def to_instruction(node: Node, rng: SourceRange) -> Instruction:
    """The typed instruction for one node; LineError if buildkit would reject it."""
    return _TYPED.get(node.name, _simple)(node, rng)
