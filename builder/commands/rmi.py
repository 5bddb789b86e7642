"""`pybuild rmi NAME...`: forget names in the local image store (as `docker rmi` untags)."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("rmi", context_settings=SETTINGS)
@root_option
@click.option("-f", "--force", is_flag=True, help="Remove every name of an image given by ID.")
@click.argument("names", nargs=-1, required=True)
def command(root: str | None, force: bool, names: tuple[str, ...]) -> None:
    """Remove the names NAME... (or every name of an image ID, or an image without a name)
    from the local store; an image left without a name is deleted.

    The blobs stay in the store until `pybuild cache prune` finds nothing using them."""
    from ..images import ImageStore
    from ..reference import ImageRef

    images = ImageStore(open_store(root))
    for name in names:
        untagged, deleted = images.remove(name, force=force)
        for removed in untagged:
            click.echo(f"Untagged: {ImageRef.parse(removed).familiar()}")
        for image_id in deleted:
            click.echo(f"Deleted: {image_id}")
