"""``sdopt report``: the HTML and markdown reports of a results directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..errors import SdoptError


@click.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--baseline", default=None, metavar="BASELINE",
              help="Baseline to show images and environment against: a results directory, a "
                   "downloaded artifact directory or git:REF:PATH (read from the git "
                   "repository holding the working directory).")
@click.option("--verdict", type=click.Path(path_type=Path), default=None,
              help="verdict.json written by 'sdopt compare' or 'sdopt gate'.")
@click.option("--history", type=click.Path(path_type=Path), multiple=True,
              help="A results history directory ('sdopt history add') or earlier results "
                   "directories for the trend chart (repeatable; read only).")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the self-contained HTML report here.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the markdown report (PR comment, job summary) here.")
@click.option("--artifact-url", default=None, help="Link to the uploaded HTML report.")
@click.option("--templates", default=None, type=click.Path(exists=True, file_okay=False,
                                                           path_type=Path),
              help="Directory of report templates searched before the built-in ones (e.g. "
                   "partials/summary.html.j2 alone).")
@click.option("--image-base-url", default=None,
              help="URL where RESULTS_DIR is published; images appear in the markdown only "
                   "with it (GitHub does not render embedded images in comments).")
def report(results_dir, baseline, verdict, history, html, markdown, artifact_url, templates,
           image_base_url):
    """Render RESULTS_DIR (written by 'sdopt bench' or 'sdopt gate') as HTML and/or markdown."""
    from ..gate.baseline import open_baseline
    from ..report import load_history, load_results, load_verdict, render_reports

    if html is None and markdown is None:
        raise SdoptError("nothing to write: pass --html PATH and/or --markdown PATH")
    for option, url in (("--artifact-url", artifact_url), ("--image-base-url", image_base_url)):
        if url is not None and not url.lower().startswith(("https://", "http://")):
            raise SdoptError(f"{option} '{url}' is not an http(s) URL")
    results, rdir = load_results(results_dir)
    verdict_doc = load_verdict(verdict) if verdict else None
    # A git baseline's images live in a temporary checkout: render while it is open.
    with open_baseline(baseline, repo=Path.cwd()) if baseline else \
            contextlib.nullcontext((None, None, None)) as (base, base_dir, _source):
        written = render_reports(results, rdir, baseline=base, baseline_dir=base_dir,
                                 verdict=verdict_doc, html_path=html, markdown_path=markdown,
                                 history=load_history(history), artifact_url=artifact_url,
                                 image_base_url=image_base_url, templates_dir=templates)
    for kind, path in written.items():
        click.echo(f"{kind} report: {path}")
