"""`pybuild pull NAME`: an image from its registry into the local store."""
from __future__ import annotations

import click

from ._store import SETTINGS, insecure_option, open_store, root_option

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
    from ..errors import UsageError
    from ..hostplatform import format_platform, parse_platform
    from ..images import ImageStore
    from ..reference import ImageRef

    if platform:
        try:
            platform = format_platform(parse_platform(platform))
        except ValueError as exc:
            raise UsageError(f"--platform: {exc}") from None
    image = ImageStore(open_store(root)).pull(name, insecure=insecure, platform=platform)
    familiar = ImageRef.parse(image.name).familiar()
    if quiet:
        click.echo(familiar)
        return
    click.echo(f"Digest: {image.manifest_digest}", err=True)
    click.echo(f"Status: downloaded {familiar}", err=True)
    click.echo(familiar)
