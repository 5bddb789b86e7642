"""`pybuild image prune`: remove the images without a name, as `docker image prune` does."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.group("image", context_settings=SETTINGS)
def command() -> None:
    """Manage the images of the local store."""


@command.command("prune", context_settings=SETTINGS)
@root_option
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
def prune(root: str | None, force: bool) -> None:
    """Remove every dangling image (one without a name: `<none>` in `pybuild images`).

    Their layers stay in the store until `pybuild cache prune` finds nothing using them."""
    from ..images import ImageStore

    if not force and not click.confirm("WARNING! This will remove all dangling images.\n"
                                       "Are you sure you want to continue?", default=False):
        return
    deleted = ImageStore(open_store(root)).prune()
    if deleted:
        click.echo("Deleted Images:")
        click.echo("".join(f"deleted: {image_id}\n" for image_id in deleted))
    click.echo("Total reclaimed space: 0B (the layers stay until `pybuild cache prune`)")
