"""Options and helpers the image-store commands share (push, pull, images, tag, rmi, ...)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

SETTINGS = {"help_option_names": ["-h", "--help"]}


def root_option(f: F) -> F:
    return click.option("--root", type=click.Path(file_okay=False), envvar="PYBUILD_ROOT",
                        help="Store folder (default: $PYBUILD_ROOT or ~/.local/share/pybuild).")(f)


def insecure_option(f: F) -> F:
    return click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
                        help="Use plain HTTP or unverified TLS for this registry.")(f)


def open_store(root: str | None) -> Any:
    from ..cache.store import Store, default_root

    return Store(Path(root) if root else default_root())


def platform_value(value: str | None) -> str | None:
    """A --platform value normalised as BuildKit names it (``linux/arm64``), or None; a
    platform containerd would refuse is a usage error."""
    if not value:
        return None
    from ..errors import UsageError
    from ..hostplatform import format_platform, host_build_platform, parse_platform

    try:
        return format_platform(host_build_platform() if value == "local" else parse_platform(value))
    except ValueError as exc:
        raise UsageError(f"--platform: {exc}") from None
