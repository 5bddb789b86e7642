"""`pybuild save NAME... -o FILE`: stored images as one tarball for `docker load`, `skopeo copy
oci-archive:` and `pybuild load`."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("save", context_settings=SETTINGS)
@root_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The tarball to write (an OCI archive that docker load also takes).")
@click.argument("names", nargs=-1, required=True)
def command(root: str | None, output: str, names: tuple[str, ...]) -> None:
    """Save the stored images NAME... (names or image IDs) to one tarball."""
    from ..imagearchive import save_images

    save_images(open_store(root), names, output)
