"""`pybuild login REGISTRY -u USER --password-stdin`: check the credentials against the
registry, then save them as `docker login` does (config.json, or its credential helper)."""
from __future__ import annotations

import sys

import click

from ._store import SETTINGS, insecure_option

__all__ = ["command"]


@click.command("login", context_settings=SETTINGS)
@insecure_option
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin: this one shows in `ps`).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("registry", required=False, default="docker.io")
def command(insecure: tuple[str, ...], username: str | None, password: str | None,
            password_stdin: bool, registry: str) -> None:
    """Log in to REGISTRY (default: Docker Hub)."""
    from ..errors import UsageError
    from ..oci.auth import Credentials, store_credentials
    from ..oci.registry import Registry

    if password_stdin:
        if password:
            raise UsageError("--password and --password-stdin cannot be used together")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        raise UsageError("give the user name with -u USER")
    if not password:
        raise UsageError("give the password on stdin with --password-stdin")
    host = _api_host(registry)
    creds = Credentials(username, password)
    Registry(host, credentials=creds, insecure_registries=insecure).check_login()
    path = store_credentials(host, creds)
    click.echo(f"Login Succeeded (saved in {path})")


def _api_host(registry: str) -> str:
    """`docker.io`, `https://index.docker.io/v1/`, `ghcr.io`, `https://ghcr.io` -> the API host."""
    host = registry.removeprefix("https://").removeprefix("http://").split("/")[0]
    hub = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
    return "registry-1.docker.io" if host in hub else host
