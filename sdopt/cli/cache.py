"""``sdopt cache info|prune``: how much the export/engine cache holds, and trimming it.

CI runners that keep ``SDOPT_CACHE`` between jobs grow it by a few GB per model and shape; the
size must be visible and bounded without anyone deleting directories by hand mid-build.
"""

from __future__ import annotations

import json
import time

import click

from ..errors import SdoptError

DIR_HELP = "Cache directory (default: $SDOPT_CACHE, else ~/.cache/sdopt)."


def _fmt_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _print_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2))


@click.group("cache")
def cache() -> None:
    """The export and engine cache ($SDOPT_CACHE, default ~/.cache/sdopt)."""


@cache.command("info")
@click.option("--dir", default=None, type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--json", is_flag=True, help="Print the entries as JSON.")
def info(dir, json):
    """Entries, their size and last use, and the total."""
    from ..cache import cache_root, list_entries
    from ..store import human_size

    entries = list_entries(dir)
    total = sum(e.size_bytes for e in entries)
    if json:
        _print_json({"root": str(cache_root(dir)), "size_bytes": total,
                     "entries": [e.to_dict() for e in entries]})
        return
    now = time.time()
    click.echo(f"cache {cache_root(dir)}: {len(entries)} entries, {human_size(total)}")
    for e in entries:
        state = "" if e.complete else "  (incomplete: a build that died)"
        click.echo(f"  {e.kind:18} {e.key:26} {human_size(e.size_bytes):>10}  used "
                   f"{_fmt_age(now - e.last_used_unix)} ago{state}")


@cache.command("prune")
@click.option("--dir", default=None, type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--max-size", default=None,
              help="Keep the most recently used entries that fit in this size, e.g. 10G.")
@click.option("--older-than-days", type=float, default=None,
              help="Remove entries not used for this many days.")
@click.option("--all", is_flag=True, help="Remove every entry.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def prune(dir, max_size, older_than_days, all, dry_run):
    """Remove dead builds' leftovers, old entries, then least recently used ones."""
    from ..cache import parse_size
    from ..cache import prune as do_prune
    from ..store import human_size

    if older_than_days is not None and older_than_days < 0:
        raise SdoptError(f"--older-than-days is {older_than_days}: expected 0 or more days")
    removed = do_prune(dir, max_bytes=parse_size(max_size) if max_size is not None else None,
                       older_than_s=None if older_than_days is None else older_than_days * 86400,
                       everything=all, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in removed:
        click.echo(f"  {verb} {e.kind}/{e.key} ({human_size(e.size_bytes)})")
    click.echo(f"{verb} {len(removed)} entries, "
               f"{human_size(sum(e.size_bytes for e in removed))}")
