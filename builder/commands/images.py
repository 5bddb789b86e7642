"""`pybuild images`: the local image store, as `docker images` prints it."""
from __future__ import annotations

import click

from ._store import SETTINGS, open_store, root_option

__all__ = ["command"]


@click.command("images", context_settings=SETTINGS)
@root_option
@click.option("-q", "--quiet", is_flag=True, help="Print only image IDs.")
@click.option("--digests", is_flag=True, help="Print manifest digests too.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="dangling=true|false",
              help="Only images without a name (dangling=true), or only named ones.")
@click.argument("repository", required=False)
def command(root: str | None, quiet: bool, digests: bool, filters: tuple[str, ...],
            repository: str | None) -> None:
    """List the images in the local store (optionally only REPOSITORY[:TAG]); an image
    without a name shows as <none>."""
    from ..errors import UsageError
    from ..images import ImageStore, images_table
    from ..reference import ImageRef

    found = ImageStore(open_store(root)).images()
    for text in filters:
        key, _, value = (part.strip().lower() for part in text.partition("="))
        if key != "dangling" or value not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter {text!r}: pybuild images takes dangling=true or dangling=false")
        found = [i for i in found if i.dangling == (value in ("true", "1"))]
    if repository:
        want = ImageRef.parse(repository)
        with_tag = ":" in repository.rsplit("/", 1)[-1]
        found = [i for i in found if not i.dangling and ImageRef.parse(i.name).name == want.name
                 and (not with_tag or ImageRef.parse(i.name).tag == want.tag)]
    if quiet:
        seen: list[str] = []
        for image in found:
            if image.image_id.short not in seen:
                seen.append(image.image_id.short)
        click.echo("".join(f"{s}\n" for s in seen), nl=False)
        return
    text = images_table(found)
    if digests:
        lines = text.splitlines()
        by_row = ["DIGEST"] + [str(i.manifest_digest) for i in found]
        width = max(len(d) for d in by_row) + 3
        # DIGEST goes after TAG, as docker puts it
        tag_end = lines[0].index("IMAGE ID")
        text = "".join(f"{line[:tag_end]}{d.ljust(width)}{line[tag_end:]}\n"
                       for line, d in zip(lines, by_row))
    click.echo(text, nl=False)
