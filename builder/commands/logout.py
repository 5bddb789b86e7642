"""`pybuild logout REGISTRY`: forget the login `pybuild login` (or `docker login`) saved."""
from __future__ import annotations

import click

from ._store import SETTINGS

__all__ = ["command"]


@click.command("logout", context_settings=SETTINGS)
@click.argument("registry", required=False, default="docker.io")
def command(registry: str) -> None:
    """Remove the saved credentials of REGISTRY (default: Docker Hub)."""
    from ..oci.auth import erase_credentials
    from .login import _api_host

    host = _api_host(registry)
    if erase_credentials(host):
        click.echo(f"Removing login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")
