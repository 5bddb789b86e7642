"""The `pybuild` entry point: a fully cached rebuild is answered from its memo
(``builder.warm``) before anything else is imported; a plain `pybuild build` line is read
without click (``builder.commands.build_impl.fast_args``); everything else goes to the click
application in ``builder.cli_app``. ``fail`` is the one place where an error becomes an exit
status (cli_app adds click's own)."""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: a replay never needs it
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["main"]

# name -> "module:attribute"; a command's module is imported only when it runs,
# so `pybuild --help` stays fast.
_COMMANDS: dict[str, tuple[str, str]] = {
    "cache": ("builder.commands.cache", "Inspect, verify and prune the build cache (ls, du, verify, prune)."),
    "build": ("builder.commands.build", "Build an image from a Dockerfile (`pybuild .` is `pybuild build .`)."),
    "image": ("builder.commands.image", "Remove the images without a name (image prune)."),
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


def main(argv: list[str] | None = None) -> Any:
    if argv is None:
        # Run as the program: collect young objects every 10,000 allocations, not every 700.
        # Starting a build allocates much and frees little (module code, classes), and the
        # default threshold spent ~4 ms of a small build in passes that found nothing.
        import gc

        gc.set_threshold(10_000, 20, 100)
    result = _main(argv)
    if argv is None:
        # Run as the program, the process ends now and the kernel takes back its memory:
        # spare the interpreter's shutdown the collector's passes over every object still
        # alive (10 ms of a small build here). Exit-time cleanup (leases, temp dirs, the
        # progress display) is atexit's, which runs as before. A caller that passes argv
        # goes on living: its collector is left alone.
        import gc

        gc.freeze()
    return result


def _main(argv: list[str] | None) -> Any:
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("PYBUILD_NO_REPLAY"):
        from . import warm

        try:
            if warm.replay(args, started) == 0:
                if argv is None:
                    _leave()
                return None
        except Exception:  # noqa: BLE001 - a replay that cannot finish leaves it to a real build
            pass
    from . import codecache

    codecache.install()
    from .commands.build_impl import fast_args

    kw = fast_args(args)
    if kw is None:
        from .cli_app import main as app_main

        return app_main(args)
    from .commands.build_impl import run

    env_debug = bool(os.environ.get("PYBUILD_DEBUG"))
    try:
        # as the click group sets it: its own --debug, before the command
        return run(kw, debug=args[:1] == ["--debug"] or env_debug, echo=_echo) or None
    except (KeyboardInterrupt, OSError, _build_error()) as exc:
        fail(exc, "--debug" in args or env_debug)


def _leave() -> None:
    """End the program now that a replay has said everything: the interpreter's own
    teardown (every module's objects, one by one) would add a millisecond or more, and
    a replay leaves nothing for atexit. Should the output not flush, the normal exit is
    left to report it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(0)


def _build_error() -> type[Exception]:
    # Imported only when an exception is being matched: `pybuild --help` never pays for it.
    from .errors import BuildError

    return BuildError


def _echo(text: str) -> None:
    # click.echo of a plain line (fast_args lets through only a -q build's image ID)
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def fail(exc: BaseException, debug: bool) -> NoReturn:
    """Say what went wrong in one sentence (a traceback too with --debug) and exit with its
    status: a BuildError's own, 130 for an interrupt, 1 for what the system refused."""
    import click  # only now: a build that succeeds never loads it

    from .errors import BuildError

    if isinstance(exc, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, BuildError):
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    assert isinstance(exc, OSError), exc
    # Anything the system refused that no module turned into a BuildError: still one
    # sentence naming what and where, never a traceback without --debug.
    where = f": {exc.filename}" if exc.filename else ""
    click.echo(f"pybuild: {exc.strerror or exc}{where}", err=True)
    if exc.errno == 28:  # ENOSPC
        click.echo("free some space, or point --root / PYBUILD_ROOT at a larger disk", err=True)
    sys.exit(1)


def __getattr__(name: str) -> Any:
    # `from builder.cli import cli` (the click group) keeps working without making every
    # start-up import click.
    if name == "cli":
        from . import cli_app

        return cli_app.cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
