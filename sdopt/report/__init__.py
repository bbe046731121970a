"""Reports of a benchmark run: a self-contained HTML page and a markdown PR comment.

:func:`render_reports` is what ``sdopt report`` and ``sdopt gate`` call; it reads only the
documents of the contract (results.json, the baseline's results.json, verdict.json) and the
images they reference, and writes each output atomically. The templates are the package
``sdopt.templates``; ``templates_dir`` puts a user's directory in front of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..store import atomic_write_text
from . import html, markdown
from .context import build_context
from .inputs import load_history, load_results, load_verdict

__all__ = ["render_reports", "build_context", "render_html", "render_markdown", "load_results",
           "load_verdict", "load_history"]


def render_html(context: dict, *, templates_dir: str | os.PathLike | None = None) -> str:
    return html.render(context, templates_dir=templates_dir)


def render_markdown(context: dict, *, templates_dir: str | os.PathLike | None = None) -> str:
    return markdown.render(context, templates_dir=templates_dir)


def render_reports(results: dict, results_dir: Path, *, baseline: dict | None = None,
                   baseline_dir: Path | None = None, verdict: dict | None = None,
                   html_path: Path | None = None, markdown_path: Path | None = None,
                   history: Iterable[dict] = (), artifact_url: str | None = None,
                   image_base_url: str | None = None,
                   templates_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Write the HTML and/or markdown report; returns {"html": path, "markdown": path} for
    what was written. ``templates_dir``: a directory searched before the built-in templates."""
    written = {}
    common = dict(baseline=baseline, baseline_dir=Path(baseline_dir) if baseline_dir else None,
                  verdict=verdict, history=list(history), artifact_url=artifact_url,
                  image_base_url=image_base_url)
    results_dir = Path(results_dir) if results_dir is not None else None
    if markdown_path is not None:
        text = render_markdown(build_context(results, results_dir, html=False, **common),
                               templates_dir=templates_dir)
        atomic_write_text(markdown_path, text)
        written["markdown"] = str(markdown_path)
    if html_path is not None:
        text = render_html(build_context(results, results_dir, **common),
                           templates_dir=templates_dir)
        atomic_write_text(html_path, text)
        written["html"] = str(html_path)
    return written
