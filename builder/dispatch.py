"""What each instruction means for the image config, and the text docker records for it.

Pure functions over ImageState: expansion happens here (with builder.expand), the
filesystem is not touched. The history texts follow BuildKit's dockerfile frontend
(`created_by`), so `docker history` reads the same for images from either builder.
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import instructions as ins
from .config import HistoryEntry, ImageState, expand_ports
from .errors import BuildError, ExpandError
from .expand import expand_word, expand_words
from .parse_go import go_quote_list
from .parse_heredoc import Heredoc

__all__ = [
    "METADATA",
    "StageEnv",
    "apply_metadata",
    "go_quote_list",
    "lone_heredoc",
    "normalize_workdir",
    "run_argv",
    "run_history_text",
]

METADATA = (ins.Env, ins.Label, ins.Maintainer, ins.Expose, ins.Volume, ins.User, ins.Cmd,
            ins.Entrypoint, ins.StopSignal, ins.Healthcheck, ins.Shell, ins.Onbuild, ins.Arg)

SIGNALS = {
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
    "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
    "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
}


@dataclass
class StageEnv:
    """The variables a stage's instructions see: the image's ENV plus declared ARGs.

    The declared ARGs live in the ImageState (``arg_env``, ``build_args``), so that a stage
    built FROM another stage inherits them, as BuildKit's dispatch state does."""

    escape: str
    build_args: Mapping[str, str]
    global_args: Mapping[str, str | None]
    used: set[str] = field(default_factory=set)
    cmd_set: bool = False  # a CMD in this stage: ENTRYPOINT then keeps it

    def lookup(self, state: ImageState) -> dict[str, str]:
        # BuildKit adds ENV and ARG values to one environment in order: the later wins.
        # An ENV drops the name from ``arg_env``, so what is left there came after any ENV.
        merged = dict(state.env)
        merged.update(state.arg_env)
        return merged

    def expand(self, word: str, state: ImageState, node: ins.Instruction) -> str:
        try:
            return expand_word(word, self.lookup(state), escape=self.escape, used=self.used)
        except ExpandError as exc:
            raise ExpandError(exc.message, location=node.range) from None

    def split(self, word: str, state: ImageState, node: ins.Instruction) -> list[str]:
        """Expanded as BuildKit's ProcessWords: what a variable gives splits at blanks,
        quoted text stays one word."""
        try:
            return expand_words(word, self.lookup(state), escape=self.escape, used=self.used)
        except ExpandError as exc:
            raise ExpandError(exc.message, location=node.range) from None

    def expand_all(self, words: Sequence[str], state: ImageState, node: ins.Instruction) -> list[str]:
        return [self.expand(w, state, node) for w in words]

    def declare(self, node: ins.Arg, state: ImageState) -> tuple[list[str], ImageState]:
        """ARG inside a stage: the history words (NAME or NAME=value) and the new state."""
        commit = []
        for name, default in node.args:
            value: str | None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, state, node)
            elif name in self.global_args:
                value = self.global_args[name]
            else:
                value = None
            state = state.with_arg(name, value)
            commit.append(name if value is None else f"{name}={value}")
        return commit, state


def _go_duration(seconds: float | None) -> str:
    """Go's time.Duration.String: `0s`, `1.5µs`, `100ms`, `1m30.5s`, `1h0m0s`."""
    ns = int(round((seconds or 0) * 1e9))
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def fraction(value: int, digits: int) -> str:
        whole, part = divmod(value, 10 ** digits)
        tail = f"{part:0{digits}d}".rstrip("0")
        return f"{whole}.{tail}" if tail else str(whole)

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{fraction(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{fraction(ns, 6)}ms"
    total_s, part = divmod(ns, 1_000_000_000)
    minutes, sec = divmod(total_s, 60)
    hours, minutes = divmod(minutes, 60)
    text = fraction(sec * 1_000_000_000 + part, 9) + "s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def normalize_workdir(current: str, path: str) -> str:
    """The new working directory as BuildKit's NormalizeWorkdir makes it on Linux: an
    absolute path is kept as written (`/app/` stays `/app/`); a relative one (or none) is
    joined to the current one and cleaned, as Go's path.Join does."""
    if path.startswith("/"):
        return path
    norm = posixpath.normpath(posixpath.join(current or "/", path))
    return "/" if norm in ("", ".") else ("/" + norm.lstrip("/"))


def _with_shell(state: ImageState, args: Sequence[str]) -> tuple[str, ...]:
    """The shell form's argv: the shell and the command line as one argument. A bare
    `RUN`, `CMD` or `ENTRYPOINT` gives the shell an empty command (`/bin/sh -c ""`),
    as BuildKit does, not a `-c` without its argument."""
    return (*state.effective_shell(), " ".join(args))


def apply_metadata(node: ins.Instruction, state: ImageState, env: StageEnv) -> ImageState:
    """Apply one metadata instruction: the new state, with its history entry."""
    def hist(text: str) -> ImageState:
        return new.with_history(HistoryEntry(created_by=text, empty_layer=True))

    if isinstance(node, ins.Env):
        pairs = [(env.expand(k, state, node), env.expand(v, state, node)) for k, v in node.pairs]
        new = state.with_env(pairs)
        return hist("ENV " + " ".join(f"{k}={v}" for k, v in pairs))
    if isinstance(node, ins.Label):
        pairs = [(env.expand(k, state, node), env.expand(v, state, node)) for k, v in node.pairs]
        new = state.with_labels(pairs)
        return hist("LABEL " + " ".join(f"{k}={v}" for k, v in pairs))
    if isinstance(node, ins.Maintainer):
        new = state.changed(author=node.name)
        return hist(f"MAINTAINER {node.name}")
    if isinstance(node, ins.Expose):
        # BuildKit sorts the words as written, before expanding them, and its history
        # lists every port that results (Go's %v of a []string).
        words = [w for word in sorted(node.ports) for w in env.split(word, state, node)]
        try:
            ports = expand_ports(words)
        except BuildError as exc:
            raise BuildError(exc.message, location=node.range) from None
        new = state.with_ports(ports)
        return hist("EXPOSE [" + " ".join(ports) + "]")
    if isinstance(node, ins.Volume):
        paths = env.expand_all(node.paths, state, node)
        for p in paths:
            if not p:
                raise BuildError("VOLUME specified can not be an empty string", location=node.range)
        new = state.with_volumes(paths)
        return hist("VOLUME [" + " ".join(paths) + "]")
    if isinstance(node, ins.User):
        user = env.expand(node.user, state, node)
        new = state.changed(user=user)
        return hist(f"USER {user}")
    if isinstance(node, ins.Cmd):
        args = _with_shell(state, node.command) if node.prepend_shell else tuple(node.command)
        new = state.changed(cmd=args, args_escaped=True)
        env.cmd_set = True
        return hist(f"CMD {go_quote_list(args)}")
    if isinstance(node, ins.Entrypoint):
        args = _with_shell(state, node.command) if node.prepend_shell else tuple(node.command)
        new = state.changed(entrypoint=args)
        if not env.cmd_set:
            # An ENTRYPOINT resets the CMD inherited from the base image.
            new = new.changed(cmd=None)
        return hist(f"ENTRYPOINT {go_quote_list(args)}")
    if isinstance(node, ins.StopSignal):
        sig = env.expand(node.signal, state, node)
        _check_signal(sig, node)
        new = state.changed(stop_signal=sig)
        return hist(f"STOPSIGNAL {sig}")
    if isinstance(node, ins.Healthcheck):
        hc: dict[str, object] = {}
        test = list(node.test) if node.test is not None else []
        hc["Test"] = test
        for key, val in (("Interval", node.interval), ("Timeout", node.timeout),
                         ("StartPeriod", node.start_period), ("StartInterval", node.start_interval)):
            if val:
                hc[key] = int(round(val * 1e9))
        if node.retries:
            hc["Retries"] = node.retries
        new = state.changed(healthcheck=hc)
        # BuildKit's %+v of the HealthcheckConfig (Dockerfile frontend 1.24 and later)
        return hist(f"HEALTHCHECK {{Test:[{' '.join(test)}] "
                    f"Interval:{_go_duration(node.interval)} "
                    f"Timeout:{_go_duration(node.timeout)} "
                    f"StartPeriod:{_go_duration(node.start_period)} "
                    f"StartInterval:{_go_duration(node.start_interval)} "
                    f"Retries:{node.retries or 0}}}")
    if isinstance(node, ins.Shell):
        new = state.changed(shell=tuple(node.shell))
        return hist("SHELL [" + " ".join(node.shell) + "]")
    if isinstance(node, ins.Onbuild):
        # ONBUILD is stored, not run, and BuildKit records no history entry for it.
        return state.changed(onbuild=state.onbuild + (node.expression,))
    if isinstance(node, ins.Arg):
        words, new = env.declare(node, state)
        return hist("ARG " + " ".join(words))
    raise AssertionError(f"not a metadata instruction: {node.keyword}")


def _check_signal(sig: str, node: ins.Instruction) -> None:
    s = sig.upper()
    if s.isdigit() and 0 < int(s) <= 64:
        return
    name = s.removeprefix("SIG")
    if name in SIGNALS or name.startswith("RTMIN") or name.startswith("RTMAX"):
        return
    raise BuildError(f"invalid signal: {sig}", location=node.range)


def lone_heredoc(node: ins.Run) -> Heredoc | None:
    """The heredoc of a RUN whose whole command is that heredoc (`RUN <<EOF`): BuildKit runs
    its text itself (through the shell, or as a script with a #! line), not the shell's
    heredoc, and shows its first line in the step's name. None for any other RUN."""
    args, files = tuple(node.command), tuple(node.heredocs or ())
    if len(files) == 1 and len(args) == 1 and args[0].strip().startswith("<<") and \
            args[0].strip().lstrip("<-").strip("'\"") == files[0].name:
        return files[0]
    return None


def run_argv(node: ins.Run, state: ImageState) -> tuple[str, ...]:
    """The argv a RUN step executes, heredocs handled as BuildKit does."""
    args = tuple(node.command)
    files = tuple(node.heredocs or ())
    if files:
        first = files[0]
        data = first.data  # a lone heredoc runs chomped; a shell reading the others chomps them
        if lone_heredoc(node) is not None:
            if data.startswith("#!"):
                # A script with its own interpreter: run it as a file (the solver mounts it).
                return ("/dev/pipes/" + first.name,)
            args = (data,)
        else:
            text = args[0] if args else ""
            for f in files:
                text += "\n" + f.content + f.name
            args = (text,)
    if node.prepend_shell:
        return _with_shell(state, args)
    return args


def run_history_text(argv: Sequence[str], env: StageEnv, state: ImageState) -> str:
    """`RUN |N K=V ... argv # buildkit`, with the build args the step sees."""
    lookup = env.lookup(state)
    pairs: dict[str, str] = {}
    for name, value in state.build_args:
        v = lookup.get(name)
        if v is None:
            v = value or ""
        pairs[name] = v
    words = [f"{k}={v}" for k, v in pairs.items()]
    prefix = [f"|{len(words)}", *words] if words else []
    return "RUN " + " ".join([*prefix, *argv]) + " # buildkit"

