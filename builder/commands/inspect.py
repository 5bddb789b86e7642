"""`pybuild inspect NAME`: a stored image's manifest and config, as JSON."""
from __future__ import annotations

import json

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("inspect", context_settings=SETTINGS)
@root_option
@click.argument("names", nargs=-1, required=True)
def command(root: str | None, names: tuple[str, ...]) -> None:
    """Print the manifest and config of each stored image NAME (or image ID) as JSON."""
    from ..images import ImageStore
    from ..reference import ImageRef

    store = open_store(root)
    images = ImageStore(store)
    out = []
    for name in names:
        image = images.lookup(name)
        out.append({
            "Name": image.name if image.dangling else ImageRef.parse(image.name).familiar(),
            "Id": str(image.image_id),
            "Digest": str(image.manifest_digest),
            "Created": image.created,
            "Size": image.size,
            "Manifest": json.loads(store.read_blob(image.manifest_digest)),
            "Config": json.loads(store.read_blob(image.config_digest)),
        })
    click.echo(json.dumps(out, indent=4))
