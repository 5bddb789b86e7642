"""`pybuild cache ls|du|verify|prune`: look after the build cache (builder.cache.manage)."""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["command"]

_ROOT = click.option("--root", type=click.Path(file_okay=False), envvar="PYBUILD_ROOT",
                     help="Store folder (default: $PYBUILD_ROOT or ~/.local/share/pybuild).")


def _store(root: str | None) -> Any:
    from ..cache.store import Store, default_root

    # Inspecting the store holds nothing in it: a build may prune or use anything.
    return Store(Path(root) if root else default_root(), track=False)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"


def _ago(t: float, now: float) -> str:
    d = max(0.0, now - t)
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= secs:
            return f"{int(d // secs)}{unit} ago"
    return f"{int(d)}s ago"


@click.group("cache", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Inspect, verify and prune the build cache."""


@command.command("ls")
@_ROOT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def ls(root: str | None, as_json: bool) -> None:
    """List cache entries, least recently used first."""
    import json

    from ..cache.manage import list_entries

    now = time.time()
    entries = list_entries(_store(root))
    if as_json:
        for e in entries:
            click.echo(json.dumps({"key": str(e.key), "step": e.step, "stage": e.stage, "size": e.size,
                                   "created": e.created, "last_used": e.last_used, "hits": e.hits,
                                   "diff_id": str(e.diff_id) if e.diff_id else None}))
        return
    click.echo(f"{'KEY':<14}{'SIZE':>9}  {'CREATED':<10} {'LAST USED':<10} {'HITS':>5}  STEP")
    for e in entries:
        step = f"[{e.stage}] {e.step}" if e.stage else e.step
        click.echo(f"{e.key.hex[:12]:<14}{human_size(e.size):>9}  {_ago(e.created, now):<10} "
                   f"{_ago(e.last_used, now):<10} {e.hits:>5}  {step}")


@command.command("du")
@_ROOT
def du(root: str | None) -> None:
    """Show how much the store takes."""
    from ..cache.manage import disk_usage

    usage = disk_usage(_store(root))
    total = 0
    for name, (count, size) in usage.items():
        click.echo(f"{name:<15}{count:>8}  {human_size(size):>9}")
        total += size
    click.echo(f"{'total':<15}{'':>8}  {human_size(total):>9}")


@command.command("verify")
@_ROOT
@click.option("--repair", is_flag=True, help="Drop what is broken, and the records that point at it.")
def verify(root: str | None, repair: bool) -> None:
    """Check every blob, snapshot and index record against its digest."""
    from ..cache.manage import verify as run_verify
    from ..errors import CacheError

    report = run_verify(_store(root), repair=repair)
    checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
    click.echo(f"checked {checked}")
    for line in report.damaged:
        click.echo(f"damaged: {line}")
    for line in report.repaired:
        click.echo(f"repaired: {line}")
    if report.unreferenced:
        click.echo(f"{len(report.unreferenced)} unreferenced (not damage; `pybuild cache prune` removes them)")
    if report.damaged and not repair:
        raise CacheError(f"{len(report.damaged)} damaged entries in the store",
                         hint="run `pybuild cache verify --repair`: what is dropped is rebuilt when needed")
    if not report.damaged:
        click.echo("no damage")


@command.command("prune")
@_ROOT
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every cache entry.")
@click.option("--keep-storage", metavar="SIZE", help="Remove least recently used entries until the store fits in SIZE.")
@click.option("--filter", "filters", multiple=True, metavar="until=DURATION",
              help="Only entries unused for DURATION (e.g. 24h).")
def prune(root: str | None, all_: bool, keep_storage: str | None, filters: tuple[str, ...]) -> None:
    """Remove cache entries, least recently used first (never what a running build holds)."""
    from ..cache.manage import parse_duration, parse_size
    from ..cache.manage import prune as run_prune
    from ..errors import UsageError

    until = None
    for f in filters:
        name, sep, value = f.partition("=")
        if name.strip().lower() != "until" or not sep:
            raise UsageError(f"invalid --filter {f!r}: only until=DURATION is supported")
        until = parse_duration(value)
    report = run_prune(_store(root), all=all_, until=until,
                       keep_storage=parse_size(keep_storage) if keep_storage is not None else None)
    now = time.time()
    for e in report.records:
        stamp = _dt.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        click.echo(f"removed {e.key.hex[:12]}  last used {stamp} ({_ago(e.last_used, now)})  {e.step}")
    if report.kept_in_use:
        click.echo(f"kept {report.kept_in_use} entries a running build holds")
    click.echo(f"removed {len(report.records)} records, {report.removed_snapshots} snapshots, "
               f"{report.removed_blobs} blobs; freed {human_size(report.freed)}")
