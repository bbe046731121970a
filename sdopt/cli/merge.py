"""``sdopt merge``: one verdict and one report from the result directories of a CI matrix.

The gate decides (sdopt.gate.merge), the report package writes the markdown
(sdopt.report.merged); this command puts them in one output directory, all or nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..gate.merge import load_legs, merged_verdict, write_merged
from ..gate.results import MERGED_NAME, REPORT_MARKDOWN_NAME, VERDICT_NAME, exit_code
from ..report.merged import merged_markdown
from .options import out_option, overwrite_option


@click.command()
@click.argument("result_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option(f"Directory for {MERGED_NAME}, {VERDICT_NAME} and {REPORT_MARKDOWN_NAME}.",
            required=True, type=click.Path(file_okay=False, path_type=Path))
@overwrite_option
def merge(result_dirs: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Merge the results of several gate/bench jobs (a matrix) into one verdict and report.

    Exit status: 0 pass (or no job judged), 1 a regression in any job, 3 a job not comparable
    (and none regressed), 2 bad input."""
    legs = load_legs(list(result_dirs))
    verdict = merged_verdict(legs)
    write_merged(out, legs, verdict, overwrite=overwrite,
                 files={REPORT_MARKDOWN_NAME: merged_markdown(legs, verdict)})
    state = (verdict or {}).get("verdict")
    click.echo(f"merged {len(legs)} result directories into {out}: {state or 'no verdicts'}")
    sys.exit(exit_code(verdict))
