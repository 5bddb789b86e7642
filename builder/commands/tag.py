"""`pybuild tag SRC DST`: another name for a stored image."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("tag", context_settings=SETTINGS)
@root_option
@click.argument("source")
@click.argument("target")
def command(root: str | None, source: str, target: str) -> None:
    """Name the stored image SOURCE (a name or an image ID) also TARGET."""
    from ..images import ImageStore

    ImageStore(open_store(root)).add_name(source, target)
