"""The click application: commands loaded lazily, and the one place a BuildError becomes an exit status
(`builder.cli.main` tries a replay of a fully cached build first, see `builder.warm`)."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

__all__ = ["main"]

# name -> "module:attribute"; a command's module is imported only when it runs,
# so `pybuild --help` stays fast.
_COMMANDS: dict[str, tuple[str, str]] = {
    "cache": ("builder.commands.cache", "Inspect, verify and prune the build cache (ls, du, verify, prune)."),
    "build": ("builder.commands.build", "Build an image from a Dockerfile (`pybuild .` is `pybuild build .`)."),
    "images": ("builder.commands.images", "List the images in the local store."),
    "completion": ("builder.commands.completion", "Print the shell completion script (bash, zsh, fish)."),
    "import": ("builder.commands.import_", "Make an image from a root filesystem folder or tar."),
    "inspect": ("builder.commands.inspect", "Show a stored image's manifest and config as JSON."),
    "load": ("builder.commands.load", "Load images from a docker or OCI archive into the local store."),
    "login": ("builder.commands.login", "Log in to a registry (saved as docker login saves it)."),
    "logout": ("builder.commands.logout", "Forget the login of a registry."),
    "plan": ("builder.commands.plan", "Say which build steps are cached and which would run, and why."),
    "parse": ("builder.commands.parse", "Print the parse of a Dockerfile."),
    "pull": ("builder.commands.pull", "Pull an image from a registry into the local store."),
    "push": ("builder.commands.push", "Push an image from the local store to a registry."),
    "rmi": ("builder.commands.rmi", "Remove names from the local image store."),
    "run": ("builder.commands.run", "Run an image's command on a throwaway overlay."),
    "save": ("builder.commands.save", "Save stored images to one tarball (docker load and skopeo take it)."),
    "tag": ("builder.commands.tag", "Give a stored image another name."),
}


# Options of the group itself; any other leading word or option starts a build.
_GROUP_OPTIONS = frozenset({"--debug", "--version", "-h", "--help"})


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


def _build_error() -> type[Exception]:
    # Imported only when an exception is being matched: `pybuild --help` never pays for it.
    from .errors import BuildError

    return BuildError


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
    except _build_error() as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        # Anything the system refused that no module turned into a BuildError: still one
        # sentence naming what and where, never a traceback without --debug.
        if debug:
            import traceback

            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"pybuild: {exc.strerror or exc}{where}", err=True)
        if exc.errno == 28:  # ENOSPC
            click.echo("free some space, or point --root / PYBUILD_ROOT at a larger disk", err=True)
        sys.exit(1)
