"""`pybuild build [PATH | URL | -]`: the flags of `docker buildx build` that make sense without a daemon.

The click command, made from the option table of builder.commands.build_impl (which also
runs it, and reads plain command lines without click: see builder.cli)."""
from __future__ import annotations

from typing import Any

import click

from .build_impl import OPTIONS, Opt, run

__all__ = ["command"]


def _click_type(opt: Opt) -> Any:
    return {
        "choice": lambda: click.Choice(list(opt.choices)),
        "int": lambda: int,
        "count": lambda: click.IntRange(min=0),
        "positive": lambda: click.FloatRange(min=0, min_open=True),
        "file": lambda: click.Path(dir_okay=False),
        "folder": lambda: click.Path(file_okay=False),
    }.get(opt.kind, lambda: None)()


def _build(**kw: object) -> None:
    """Build an image from a Dockerfile.

    CONTEXT is a folder (default .), - (a tar archive or a Dockerfile on stdin), a git
    repository (https://host/repo.git#ref:subdir, git@host:repo.git, ...) or the URL of a
    tar archive or a Dockerfile."""
    ctx = click.get_current_context()
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    status = run(kw, debug=debug, echo=click.echo)
    if status:
        ctx.exit(status)


def _command() -> click.Command:
    func: Any = _build
    for opt in reversed(OPTIONS):
        extra: dict[str, Any] = {"is_flag": True} if opt.kind == "flag" else {}
        kind = _click_type(opt)
        if kind is not None:
            extra["type"] = kind
        for key in ("multiple", "envvar", "metavar", "hidden"):
            if getattr(opt, key):
                extra[key] = getattr(opt, key)
        if opt.default is not None:
            extra["default"] = opt.default
        func = click.option(*opt.opts, opt.name, help=opt.help, **extra)(func)
    func = click.argument("context", default=".", required=False)(func)
    return click.command("build", context_settings={"help_option_names": ["-h", "--help"]})(func)


command = _command()
