"""`pybuild pull NAME`: an image from its registry into the local store."""
from __future__ import annotations

import click

from ._store import SETTINGS, insecure_option, open_store, platform_value, root_option

__all__ = ["command"]


@click.command("pull", context_settings=SETTINGS)
@root_option
@insecure_option
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's name.")
@click.option("--platform", metavar="PLATFORM", help="Pull this platform's image (os/arch[/variant]) instead of this machine's.")
@click.argument("name")
def command(root: str | None, insecure: tuple[str, ...], quiet: bool, platform: str | None,
            name: str) -> None:
    """Pull NAME[:TAG|@DIGEST] for this host's platform (or --platform's) into the local store."""
    from ..images import ImageStore
    from ..reference import ImageRef

    platform = platform_value(platform)
    image = ImageStore(open_store(root)).pull(name, insecure=insecure, platform=platform)
    familiar = ImageRef.parse(image.name).familiar()
    if quiet:
        click.echo(familiar)
        return
    click.echo(f"Digest: {image.manifest_digest}", err=True)
    click.echo(f"Status: downloaded {familiar}", err=True)
    click.echo(familiar)
