"""The `pybuild` entry point: a fully cached rebuild is answered from its memo
(``builder.warm``) before anything else is imported; everything else goes to the click
application in ``builder.cli_app``."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

__all__ = ["main"]


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
    from .cli_app import main as app_main

    return app_main(args)


def __getattr__(name: str) -> Any:
    # `from builder.cli import cli` (the click group) keeps working without making every
    # start-up import click.
    if name in ("cli", "_COMMANDS"):
        from . import cli_app

        return getattr(cli_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
