"""`pybuild run`: run an image's command in the foreground, on a throwaway overlay."""
from __future__ import annotations


import click

__all__ = ["command"]


@click.command("run", context_settings={"help_option_names": ["-h", "--help"],
                                        "ignore_unknown_options": True})
@click.option("--rm", is_flag=True, help="Accepted for docker compatibility: nothing is ever kept.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Set an environment variable.")
@click.option("--network", default="default", type=click.Choice(["default", "none", "host"]))
@click.option("-v", "--volume", "volumes", multiple=True, metavar="HOST:CTR[:ro]", help="Bind a host path.")
@click.option("-u", "--user", help="Run as this user (default: the image's USER).")
@click.option("-w", "--workdir", help="Working directory inside the image.")
@click.option("--entrypoint", help="Override the image's ENTRYPOINT.")
@click.option("--root", type=click.Path(file_okay=False), envvar="PYBUILD_ROOT", help="Store folder.")
@click.argument("image")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def command(rm: bool, env: tuple[str, ...], network: str, volumes: tuple[str, ...], user: str | None,
            workdir: str | None, entrypoint: str | None, root: str | None, image: str,
            cmd: tuple[str, ...]) -> None:
    """Run IMAGE's entrypoint and command (or CMD...) in the same isolation as RUN."""
    from pathlib import Path

    from ..build import isolate_mounts
    from ..cache.store import Store, default_root
    from ..runimage import run_image

    store = Store(Path(root) if root else default_root())
    isolate_mounts()
    code = run_image(store, image, cmd, env=env, network=network, volumes=volumes, user=user,
                     workdir=workdir, entrypoint=entrypoint)
    click.get_current_context().exit(code)
