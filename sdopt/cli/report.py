"""``sdopt report``: the HTML and markdown reports of a results directory."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SdoptError


def register(main: click.Group) -> None:
    main.add_command(report)


@click.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_dir", type=click.Path(path_type=Path), default=None,
              help="Baseline results directory (or its results.json) to compare images and "
                   "environment with.")
@click.option("--verdict", "verdict_file", type=click.Path(path_type=Path), default=None,
              help="verdict.json written by 'sdopt compare'.")
@click.option("--history", "history", type=click.Path(path_type=Path), multiple=True,
              help="Earlier results directories for the trend chart (repeatable).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the self-contained HTML report here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the markdown report (PR comment, job summary) here.")
@click.option("--artifact-url", default=None, help="Link to the uploaded HTML report.")
@click.option("--image-base-url", default=None,
              help="URL where RESULTS_DIR is published; images appear in the markdown only "
                   "with it (GitHub does not render embedded images in comments).")
def report(results_dir, baseline_dir, verdict_file, history, html_path, markdown_path,
           artifact_url, image_base_url):
    """Render RESULTS_DIR (written by 'sdopt bench') as HTML and/or markdown."""
    from ..report import load_history, load_results, load_verdict, render_reports

    if html_path is None and markdown_path is None:
        raise SdoptError("nothing to write: pass --html PATH and/or --markdown PATH")
    for option, url in (("--artifact-url", artifact_url), ("--image-base-url", image_base_url)):
        if url is not None and not url.lower().startswith(("https://", "http://")):
            raise SdoptError(f"{option} '{url}' is not an http(s) URL")
    results, rdir = load_results(results_dir)
    baseline, bdir = load_results(baseline_dir, "baseline") if baseline_dir else (None, None)
    verdict = load_verdict(verdict_file) if verdict_file else None
    written = render_reports(results, rdir, baseline=baseline, baseline_dir=bdir, verdict=verdict,
                             html_path=html_path, markdown_path=markdown_path,
                             history=load_history(history), artifact_url=artifact_url,
                             image_base_url=image_base_url)
    for kind, path in written.items():
        click.echo(f"{kind} report: {path}")
