"""The `pybuild` entry point: a fully cached rebuild is answered from its memo
(``builder.warm``) before anything else is imported; everything else goes to the click
application in ``builder.cli_app``."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

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


def main(argv: list[str] | None = None) -> Any:
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("PYBUILD_NO_REPLAY"):
        from . import warm

        try:
            if warm.replay(args, started) == 0:
                return None
        except Exception:  # noqa: BLE001 - a replay that cannot finish leaves it to a real build
            pass
    from . import codecache

    codecache.install()
    from .cli_app import main as app_main

    return app_main(args)


def __getattr__(name: str) -> Any:
    # `from builder.cli import cli` (the click group) keeps working without making every
    # start-up import click.
    if name == "cli":
        from . import cli_app

        return cli_app.cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
