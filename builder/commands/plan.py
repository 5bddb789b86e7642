"""`pybuild plan [PATH]`: the flags of `pybuild build`; runs nothing, prints for every step
whether it is cached or would run, and why (builder.cache.explain)."""
from __future__ import annotations

from typing import Any

import click

from .build import command as _build

__all__ = ["command"]


def _plan(**kw: Any) -> None:
    assert _build.callback is not None
    if kw.get("progress") == "auto":
        kw["progress"] = "quiet"  # the plan is the output
    _build.callback(**kw, dry_run=True)


command = click.Command(
    "plan", callback=_plan, params=[p for p in _build.params if p.name != "dry_run"],
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Say which steps of a build are cached and which would run, and why; run nothing.")
