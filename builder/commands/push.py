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
    """Push image NAME[:TAG] from the local store to its registry."""
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
