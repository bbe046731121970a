"""``sdopt merge``: one verdict and one report from the result directories of a CI matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("result_dirs", nargs=-1, required=True, type=click.Path())
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Directory for merged.json, verdict.json and report.md.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
    def merge(result_dirs, out, overwrite):
        """Merge the results of several gate/bench jobs (a matrix) into one report.

        Exit status as for compare: 0 pass (or no verdicts), 1 regression in any job,
        2 a job not comparable or bad input."""
        from ..gate.merge import merge as do_merge

        verdict = do_merge(list(result_dirs), Path(out), overwrite=overwrite)
        state = (verdict or {}).get("verdict")
        click.echo(f"merged {len(result_dirs)} result directories into {out}: "
                   f"{state or 'no verdicts'}")
        sys.exit({"regression": 1, "not_comparable": 2}.get(state, 0))
