"""Reports of a benchmark run: a self-contained HTML page and a markdown PR comment.

:func:`render_reports` is what ``sdopt report`` and ``sdopt gate`` call; it reads only the
documents of the contract (results.json, the baseline's results.json, verdict.json) and the
images they reference, and writes each output atomically.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from . import context as ctxmod
from . import fmt
from .inputs import load_history, load_results, load_verdict

__all__ = ["render_reports", "build_context", "render_html", "render_markdown", "load_results",
           "load_verdict", "load_history"]

VERDICT_ICONS = {"pass": "✅", "regression": "❌", "not_comparable": "⚠️", "none": "ℹ️"}
# The page uses plain symbols: colour emoji fonts are missing on many machines (CI runners).
VERDICT_SYMBOLS = {"pass": "✓", "regression": "✗", "not_comparable": "⚠", "none": "•"}


def build_context(results: dict, results_dir: Path | None, *, baseline: dict | None = None,
                  baseline_dir: Path | None = None, verdict: dict | None = None,
                  history: Iterable[dict] = (), artifact_url: str | None = None,
                  image_base_url: str | None = None, html: bool = True) -> dict[str, Any]:
    """Everything both templates show. ``html=False`` skips reading images and building charts
    (the markdown needs neither)."""
    cfg = ctxmod._d(results.get("config"))
    opt = ctxmod._d(results.get("optimization"))
    verdict_view = ctxmod.verdict_view(verdict)
    speed, speed_kind = ctxmod.speedup_of(results)
    candidates = ctxmod.candidate_rows(results)
    counts = Counter(c["status"] for c in candidates)
    device = ctxmod._d(ctxmod._d(results.get("environment")).get("device"))
    model = str(cfg.get("model") or "unnamed model")
    size = f"{cfg.get('width', '?')}x{cfg.get('height', '?')} px" if cfg.get("width") else ""
    bits = [f"model {model}", size, f"{cfg['steps']} steps" if cfg.get("steps") else "",
            _count(len(ctxmod._l(cfg.get("prompts"))), "prompt"),
            _count(cfg.get("runs"), "run")]
    env_bits = [str(device.get("name") or ""), str(device.get("kind") or ""),
                f"{device['cores']} cores" if device.get("cores") else ""]
    context: dict[str, Any] = {
        "model": model, "model_line": " · ".join(b for b in bits if b),
        "created": fmt.timestamp(results.get("created_unix")),
        "sdopt_version": str(results.get("sdopt_version") or "?"),
        "verdict": verdict_view, "verdict_icon": VERDICT_ICONS[verdict_view.state],
        "verdict_symbol": VERDICT_SYMBOLS[verdict_view.state],
        "speedup": fmt.ratio(speed) if speed else "", "speedup_kind": speed_kind,
        "summary": ctxmod.summary_rows(results), "candidates": candidates,
        "candidate_counts": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none",
        "search_line": (f"metric {opt.get('metric', '?')}, allowed drop "
                        f"{'lossless only' if opt.get('metric_drop_ths') is None else fmt.number(opt.get('metric_drop_ths'))}"
                        f", search took {fmt.seconds(opt.get('wall_s'))}; latency is the median of "
                        "one UNet call, speedup is against torch_eager/fp32 in the same search"),
        "environment_line": " · ".join(b for b in env_bits if b),
        "artifact_url": artifact_url or "", "has_baseline": baseline is not None,
        "prompts": [str(p) for p in ctxmod._l(cfg.get("prompts"))],
    }
    context.update(_markdown_images(results, baseline, image_base_url))
    if html:
        from . import charts
        from .images import HEAT_FULL_SCALE

        series = [(name, name, ctxmod._l(ctxmod._d(ctxmod.variant(results, name)
                                                   .get("latency_s")).get("samples")))
                  for name in ("original", "optimized")]
        if baseline is not None:
            series.insert(0, ("baseline " + ("optimized" if ctxmod.variant(baseline, "optimized")
                                             else "original"), "baseline",
                              ctxmod._l(ctxmod._d(ctxmod.variant(baseline, "optimized")
                                                  or ctxmod.variant(baseline, "original"))
                                        .get("latency_s", {}).get("samples"))))
        stage_rows = [(name, ctxmod.variant(results, name).get("stages_s"),
                       ctxmod.median(ctxmod.variant(results, name)))
                      for name in ("original", "optimized")]
        context.update(
            charts=[charts.speedup_chart([c["raw"] for c in candidates]),
                    charts.latency_chart(series), charts.stages_chart(stage_rows),
                    charts.trend_chart(ctxmod.history_points(results, baseline, list(history)))],
            image_rows=ctxmod.image_rows(results, results_dir, baseline, baseline_dir, verdict),
            environment=ctxmod.environment_rows(results, baseline),
            config_rows=ctxmod.config_rows(results), heat_full_scale=HEAT_FULL_SCALE)
    return context


def _count(n, noun: str) -> str:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return ""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _markdown_images(results: dict, baseline: dict | None, base_url: str | None) -> dict:
    """Image links for the comment: only with a base URL where the run's files are published
    (GitHub renders no data: URIs in comments)."""
    if not base_url:
        return {"md_images": [], "md_image_columns": []}
    from .markdown import safe_url

    columns = [n for n in ("original", "optimized") if ctxmod.variant(results, n).get("images")]
    by_key = {n: {(str(i.get("prompt")), i.get("seed")): i.get("path")
                  for i in map(ctxmod._d, ctxmod._l(ctxmod.variant(results, n).get("images")))}
              for n in columns}
    keys = list(dict.fromkeys(k for n in columns for k in by_key[n]))
    rows = []
    for prompt, seed in keys:
        cells = []
        for n in columns:
            path = by_key[n].get((prompt, seed))
            ok = isinstance(path, str) and not path.startswith("/") and ".." not in path.split("/")
            cells.append(safe_url(base_url, path) if ok else "")
        rows.append({"prompt": prompt, "seed": seed, "cells": cells, "alt": prompt[:80]})
    return {"md_images": rows, "md_image_columns": columns}


def render_html(context: dict) -> str:
    from .html import render

    return render(context)


def render_markdown(context: dict) -> str:
    from .markdown import render

    return render(context)


def render_reports(results: dict, results_dir: Path, *, baseline: dict | None = None,
                   baseline_dir: Path | None = None, verdict: dict | None = None,
                   html_path: Path | None = None, markdown_path: Path | None = None,
                   history: Iterable[dict] = (), artifact_url: str | None = None,
                   image_base_url: str | None = None) -> dict[str, str]:
    """Write the HTML and/or markdown report; returns {"html": path, "markdown": path} for
    what was written."""
    from ..store import atomic_write_text

    written = {}
    common = dict(baseline=baseline, baseline_dir=Path(baseline_dir) if baseline_dir else None,
                  verdict=verdict, history=list(history), artifact_url=artifact_url,
                  image_base_url=image_base_url)
    results_dir = Path(results_dir) if results_dir is not None else None
    if markdown_path is not None:
        text = render_markdown(build_context(results, results_dir, html=False, **common))
        atomic_write_text(markdown_path, text)
        written["markdown"] = str(markdown_path)
    if html_path is not None:
        atomic_write_text(html_path, render_html(build_context(results, results_dir, **common)))
        written["html"] = str(html_path)
    return written
