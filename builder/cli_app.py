"""The click application: commands loaded lazily, and the one place a BuildError becomes an exit status
(`builder.cli.main` tries a replay of a fully cached build first, see `builder.warm`)."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from .cli import _COMMANDS, _GROUP_OPTIONS, _build_error, fail

__all__ = ["main"]


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _COMMANDS:
            module = importlib.import_module(_COMMANDS[name][0])
            cmd: click.Command = getattr(module, "command")
            return cmd
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `pybuild .` and `pybuild -t x .` mean `pybuild build ...`: anything that is neither
        # a command nor an option of pybuild itself starts a build.
        i = 0
        while i < len(args) and args[i] == "--debug":
            i += 1
        if i < len(args) and args[i] not in _COMMANDS and args[i] not in _GROUP_OPTIONS:
            args = [*args[:i], "build", *args[i:]]
        return super().parse_args(ctx, args)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="pybuild", prog_name="pybuild")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """pybuild builds OCI images from Dockerfiles, without a daemon."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("PYBUILD_DEBUG"))


def main(argv: list[str] | None = None) -> Any:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("PYBUILD_DEBUG"))
    try:
        status = cli.main(args=args, prog_name="pybuild", standalone_mode=False)
        # A command that ends with ctx.exit(N) (`pybuild run`) hands its status back here.
        if isinstance(status, int) and not isinstance(status, bool) and status != 0:
            sys.exit(status)
        return status
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (_build_error(), KeyboardInterrupt, OSError) as exc:
        fail(exc, debug)
