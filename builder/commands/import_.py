"""`pybuild import ROOTFS.tar|DIR NAME[:TAG]`: an image of one layer, like `docker import`."""
from __future__ import annotations

import click

__all__ = ["command"]


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--message", help="The history comment (default: Imported from FILE).")
@click.option("--root", type=click.Path(file_okay=False), envvar="PYBUILD_ROOT", help="Store folder.")
@click.option("--platform", metavar="PLATFORM", help="The platform the files are for (os/arch[/variant]; default this machine's).")
@click.argument("source")
@click.argument("name")
def command(message: str | None, root: str | None, platform: str | None, source: str, name: str) -> None:
    """Make an image named NAME from a root filesystem folder or tar archive."""
    from pathlib import Path

    from ..cache.store import Store, default_root
    from ..images import import_rootfs
    from ._store import platform_value

    platform = platform_value(platform)
    store = Store(Path(root) if root else default_root())
    image = import_rootfs(store, source, name, message=message, platform=platform)
    click.echo(str(image.config_digest))
