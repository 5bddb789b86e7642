"""`pybuild completion bash|zsh|fish`: print the shell completion script (click's)."""
from __future__ import annotations

import click

__all__ = ["command"]


@click.command("completion", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def command(shell: str) -> None:
    """Print the completion script for SHELL, e.g. `eval "$(pybuild completion bash)"`."""
    from click.shell_completion import get_completion_class

    from ..cli_app import cli

    cls = get_completion_class(shell)
    assert cls is not None
    comp = cls(cli, {}, "pybuild", "_PYBUILD_COMPLETE")
    click.echo(comp.source())
