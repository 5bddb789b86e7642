"""`pybuild push NAME[:TAG]`: push a stored image to the registry its name names."""
from __future__ import annotations

import click

from ._store import SETTINGS, insecure_option, open_store, root_option

__all__ = ["command"]


@click.command("push", context_settings=SETTINGS)
@root_option
@insecure_option
@click.option("--chunk-size", type=int, envvar="PYBUILD_PUSH_CHUNK_SIZE", metavar="BYTES",
              help="Blobs this large or larger go up in chunks of this size (default 16 MiB).")
@click.option("--jobs", type=int, default=4, show_default=True, help="Blobs to upload at once.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the digest.")
@click.argument("name")
def command(root: str | None, insecure: tuple[str, ...], chunk_size: int | None, jobs: int,
            quiet: bool, name: str) -> None:
    """Push image NAME[:TAG] from the local store to its registry.

    \b
    Credentials: docker's config.json ($DOCKER_CONFIG; auths, credsStore, credHelpers), then
    podman's auth.json ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    ~/.config/containers/auth.json); `pybuild login` writes docker's.
    TLS: verified; a registry's CA and client cert/key are read from
    /etc/docker/certs.d/HOST/ (or $PYBUILD_CERTS_D/HOST/) as docker reads them; loopback
    registries without such a folder speak plain HTTP; --insecure-registry HOST allows
    unverified TLS or plain HTTP. $PYBUILD_REGISTRY_MAX_BACKOFF caps the wait between retries.
    """
    from ..images import push_stored

    store = open_store(root)
    report = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    results = push_stored(store, name, insecure=insecure, chunk_size=chunk_size, jobs=max(jobs, 1),
                          report=report)
    for result in results:
        for pushed in result.names:
            if quiet:
                click.echo(str(result.digest))
            else:
                click.echo(f"{pushed}: digest: {result.digest} size: {_manifest_size(store, result)}")


def _manifest_size(store: object, result: object) -> int:
    return store.blob_path(result.digest).stat().st_size  # type: ignore[attr-defined]
