"""`pybuild load -i FILE`: images from an OCI archive or a docker archive into the store."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("load", context_settings=SETTINGS)
@root_option
@click.option("-i", "--input", "source", required=True, type=click.Path(dir_okay=False),
              help="The tarball to read (docker save, pybuild save, an OCI archive).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing.")
def command(root: str | None, source: str, quiet: bool) -> None:
    """Load every image of a tarball into the local store, verifying each blob."""
    from ..imagearchive import load_archive
    from ..reference import ImageRef

    for image in load_archive(open_store(root), source):
        if quiet:
            continue
        if not image.names:
            click.echo(f"Loaded image ID: {image.config_digest}")
        for name in image.names:
            click.echo(f"Loaded image: {ImageRef.parse(name).familiar()}")
