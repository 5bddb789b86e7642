"""How a build's steps are named on the progress display, as BuildKit names them: the
step count of a stage, the platform arrow of a stage that cross-compiles, the FROM
step's full image name, and a RUN's text with a lone heredoc's first line."""
from __future__ import annotations

from collections.abc import Mapping

from . import instructions as ins
from .dispatch import lone_heredoc
from .expand import expand_shown
from .graph import Stage

__all__ = ["cross_arrow", "shown_base", "shown_run", "steps_of"]


def cross_arrow(stage: Stage, platform: str, target: str | None) -> str:
    """``->arm64`` after a step's platform when the stage runs on another platform than the
    target and has declared a TARGET* arg, as BuildKit's formatTargetPlatform shows a stage
    that cross-compiles."""
    declared = {name for n in stage.instructions if isinstance(n, ins.Arg) for name, _ in n.args}
    if not target or not declared & {"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}:
        return ""
    here, there = platform.split("/"), target.split("/")
    if here[0] == there[0] and here[1] != there[1]:
        return "->" + "/".join(there[1:])
    return "" if here[0] == there[0] else "->" + target


def steps_of(stage: Stage) -> int:
    """The steps BuildKit counts in a stage before it runs: its FROM, when that reads an
    image, and each ADD, COPY, RUN and WORKDIR. A stage on a named context counts none
    (BuildKit leaves it before counting), so its steps are named without a number."""
    if stage.base.kind == "context":
        return 0
    own = sum(isinstance(n, (ins.Add, ins.Copy, ins.Run, ins.Workdir)) for n in stage.instructions)
    return own + (stage.base.kind == "image")


def shown_base(stage: Stage) -> str:
    """The FROM step's image as BuildKit names it: the reference in full
    (docker.io/library/busybox:latest); a named context as written."""
    if stage.base.kind != "image":
        return stage.base.name
    from .reference import ImageRef, InvalidReference

    try:
        return str(ImageRef.parse(stage.base.name))
    except (InvalidReference, ValueError):
        return stage.base.name


def shown_run(title: str, node: ins.Run, env: Mapping[str, str], escape: str) -> str:
    """A RUN's text as BuildKit shows it: a lone heredoc's first line added in brackets
    (`RUN <<EOF (apt-get update...)`), then the stage's variables expanded with quotes kept
    and unset ones left as written."""
    doc = lone_heredoc(node)
    if doc is not None:
        lines = doc.content.strip().replace("\r\n", "\n").split("\n")
        title += f" ({lines[0]}{'...' if len(lines) > 1 else ''})"
    return expand_shown(title, env, escape=escape, raw=True)
