"""The report's view model: what both templates show, taken from results, baseline and verdict.

Templates get display strings and plain lists, never the raw documents, so the HTML page and
the PR comment cannot disagree and every optional field of the contract (a run without an
'original' variant, without a search, without a baseline) is handled once, here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..gate.history import same_kind
from ..gate.results import (NOT_COMPARABLE, PASS, REGRESSION, VERDICT_TITLE, VERDICTS,
                            end_to_end_speedup, variant_median_s)
from ..gate.results_history import as_run
from . import charts, fmt
from .images import HEAT_FULL_SCALE, compare, load_image
from .markdown import safe_url

VERDICT_LABELS = {**VERDICT_TITLE, None: "no verdict"}


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value) -> list:
    return value if isinstance(value, list) else []


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def variant(results: dict | None, name: str) -> dict:
    return _d(_d(_d(results).get("variants")).get(name))


def speedup_of(results: dict | None) -> tuple[float | None, str]:
    """End-to-end speedup of optimized over original when both were benchmarked, else the UNet
    speedup of the search; with what it measures."""
    end_to_end = end_to_end_speedup(results)
    if end_to_end:
        return end_to_end, "end to end"
    unet = _num(_d(_d(results).get("optimization")).get("speedup"))
    return (unet, "UNet call") if unet else (None, "")


def judged_psnr_db(image: dict) -> float | None:
    """The PSNR a verdict recorded for one image pair: JSON has no infinity, so identical images
    are recorded as null (the schema's rule) and shown as infinite."""
    value = image.get("psnr_db")
    return math.inf if value is None else _num(value)


@dataclass
class Verdict:
    state: str  # pass | regression | not_comparable | none
    label: str
    reasons: list[str]
    latency: dict | None
    quality_regressions: list[dict]
    quality: dict | None
    baseline_source: str
    environment_match: bool | None


def _check_value(value, unit) -> str:
    if unit == "ratio":
        x = _num(value)
        return fmt.DASH if x is None else f"{x:.3f} × original"
    return fmt.seconds(value)


def _check_row(check: dict) -> dict[str, Any]:
    """One latency comparison of the verdict (sdopt.gate.latency): which, on what, decisive?"""
    return {"name": str(check.get("name") or ""), "catches": str(check.get("catches") or ""),
            "baseline": _check_value(check.get("baseline"), check.get("unit")),
            "current": _check_value(check.get("current"), check.get("unit")),
            "change": fmt.ratio(check.get("change"), 3), "allowed": fmt.ratio(check.get("allowed"), 3),
            "p_value": fmt.p_value(check.get("p_value")), "test": str(check.get("test") or ""),
            "based_on": str(check.get("based_on") or ""),
            "regressed": bool(check.get("regressed")), "note": str(check.get("note") or "")}


def _legacy_row(lat: dict) -> dict[str, Any]:
    """A verdict written before the latency checks: one sample test of the medians."""
    tol = _num(lat.get("tolerance"))
    return {"name": "samples", "catches": "", "baseline": fmt.seconds(lat.get("baseline_median_s")),
            "current": fmt.seconds(lat.get("current_median_s")),
            "change": fmt.ratio(lat.get("ratio"), 3),
            "allowed": fmt.ratio(1 + tol, 3) if tol is not None else fmt.DASH,
            "p_value": fmt.p_value(lat.get("p_value")), "test": str(lat.get("test") or ""),
            "based_on": "samples", "regressed": bool(lat.get("regressed")),
            "note": ""}


def verdict_view(verdict: dict | None) -> Verdict:
    v = _d(verdict)
    state = v.get("verdict") if v.get("verdict") in VERDICTS else None
    lat = _d(v.get("latency"))
    latency = None
    if lat:
        latency = {
            "baseline": fmt.seconds(lat.get("baseline_median_s")),
            "current": fmt.seconds(lat.get("current_median_s")),
            "ratio": fmt.ratio(lat.get("ratio"), 3),
            # the gate's tolerance is a fraction: the allowed ratio is 1 + tolerance
            "tolerance": fmt.ratio(1 + tol, 3) if (tol := _num(lat.get("tolerance"))) is not None
            else fmt.DASH,
            "p_value": fmt.p_value(lat.get("p_value")),
            "test": str(lat.get("test") or ""),
            "regressed": bool(lat.get("regressed")),
            "decided_by": ", ".join(str(n) for n in _l(lat.get("decided_by"))),
            "checks": [_check_row(_d(c)) for c in _l(lat.get("checks"))] or [_legacy_row(lat)],
        }
    q = _d(v.get("quality"))
    regressions = []
    for img in _l(q.get("images")):
        img = _d(img)
        if img.get("regressed"):
            regressions.append({"prompt": str(img.get("prompt", "")), "seed": img.get("seed"),
                                "psnr": fmt.db(judged_psnr_db(img)),
                                "ssim": fmt.number(img.get("ssim"), 4)})
    quality = None
    if q:
        quality = {"metric": str(q.get("metric") or ""),
                   "threshold": fmt.number(q.get("threshold")),
                   "regressed": bool(q.get("regressed")), "count": len(_l(q.get("images")))}
    base = _d(v.get("baseline"))
    match = base.get("environment_match")
    return Verdict(state or "none", VERDICT_LABELS[state],
                   [str(r) for r in _l(v.get("reasons"))], latency, regressions, quality,
                   str(base.get("source") or ""), match if isinstance(match, bool) else None)


def summary_rows(results: dict) -> list[dict[str, str]]:
    """Speedster's summary table, original vs optimized, one row per property."""
    o, s = variant(results, "original"), variant(results, "optimized")
    opt = _d(results.get("optimization"))
    so, ss = _d(opt.get("original")), _d(opt.get("selected"))
    rows = []

    def row(metric, original, optimized, change=""):
        rows.append({"metric": metric, "original": original, "optimized": optimized,
                     "change": change})

    row("backend", str(o.get("label") or o.get("backend") or so.get("id") or fmt.DASH),
        str(s.get("label") or s.get("backend") or ss.get("id") or fmt.DASH))
    mo, ms = variant_median_s(results, "original"), variant_median_s(results, "optimized")
    if mo or ms:
        iqr_o, iqr_s = _d(o.get("latency_s")).get("iqr"), _d(s.get("latency_s")).get("iqr")
        row("latency per image (median ± IQR)",
            f"{fmt.seconds(mo)} ± {fmt.seconds(iqr_o)}" if mo else fmt.DASH,
            f"{fmt.seconds(ms)} ± {fmt.seconds(iqr_s)}" if ms else fmt.DASH,
            fmt.ratio(mo / ms) + " faster" if mo and ms else "")
        to, ts = _num(o.get("throughput_images_per_s")), _num(s.get("throughput_images_per_s"))
        row("throughput", f"{to:.3g} images/s" if to else fmt.DASH,
            f"{ts:.3g} images/s" if ts else fmt.DASH, fmt.ratio(ts / to) if to and ts else "")
    if so or ss:
        lo, ls = _num(so.get("latency_s")), _num(ss.get("latency_s"))
        row("UNet call latency (search)", fmt.seconds(lo), fmt.seconds(ls),
            fmt.ratio(lo / ls) + " faster" if lo and ls else "")
        row("UNet model size", fmt.size(so.get("model_size_bytes")),
            fmt.size(ss.get("model_size_bytes")),
            fmt.percent_change(ss.get("model_size_bytes"), so.get("model_size_bytes")))
    po, ps = o.get("peak_memory_bytes"), s.get("peak_memory_bytes")
    if po is not None or ps is not None:
        kind = s.get("memory_kind") or o.get("memory_kind") or ""
        row(f"peak memory ({kind})" if kind else "peak memory", fmt.size(po), fmt.size(ps),
            fmt.percent_change(ps, po))
    if ss:
        ths = opt.get("metric_drop_ths")
        allowed = "lossless only" if ths is None else f"allowed ≤ {fmt.number(ths)}"
        row("metric drop", fmt.number(so.get("metric_drop")) if so else fmt.DASH,
            f"{fmt.number(ss.get('metric_drop'))} ({opt.get('metric', 'metric')}, {allowed})")
    techniques = _l(s.get("techniques")) or _l(ss.get("techniques"))
    row("techniques", "none", ", ".join(str(t) for t in techniques) or "none")
    return rows


def _memory(candidate: dict) -> str:
    """A candidate's peak memory, labelled when it is not the process's RSS (on CUDA: the
    device memory it adds, sdopt.optimize.timing.MEMORY_KINDS)."""
    from ..optimize.timing import MEMORY_LABELS

    size = fmt.size(candidate.get("peak_memory_bytes"))
    label = MEMORY_LABELS.get(candidate.get("memory_kind"))
    return f"{size} ({label})" if label and candidate.get("peak_memory_bytes") is not None \
        else size


def candidate_rows(results: dict) -> list[dict[str, Any]]:
    rows = []
    for c in _l(_d(results.get("optimization")).get("candidates")):
        c = _d(c)
        drop, worst = c.get("metric_drop"), c.get("metric_drop_max")
        rows.append({
            "id": str(c.get("id", "?")), "status": str(c.get("status", "?")),
            "reason": str(c.get("reason") or ""),
            "build": fmt.seconds(c.get("build_s")), "latency": fmt.seconds(c.get("latency_s")),
            "iqr": fmt.seconds(c.get("latency_iqr_s")), "speedup": fmt.ratio(c.get("speedup")),
            "drop": fmt.DASH if drop is None else f"{fmt.number(drop)} / {fmt.number(worst)}",
            "memory": _memory(c),
            "size": fmt.size(c.get("model_size_bytes")),
            "raw": c,
        })
    return rows


def _flatten(prefix: str, value, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, ", ".join(str(v) for v in value) or fmt.DASH))
    else:
        out.append((prefix, fmt.DASH if value is None else str(value)))


def environment_rows(results: dict, baseline: dict | None) -> list[dict[str, Any]]:
    """Device, libraries and timing-relevant environment, with the baseline's value where it
    differs (results from unlike machines are not comparable)."""
    current: list[tuple[str, str]] = []
    _flatten("", _d(results.get("environment")), current)
    base: dict[str, str] = {}
    if baseline is not None:
        pairs: list[tuple[str, str]] = []
        _flatten("", _d(baseline.get("environment")), pairs)
        base = dict(pairs)
    rows = []
    for key, value in current:
        b = base.get(key) if baseline is not None else None
        rows.append({"key": key, "value": value, "baseline": b,
                     "differs": baseline is not None and b != value})
    for key, value in base.items():
        if key not in dict(current):
            rows.append({"key": key, "value": fmt.DASH, "baseline": value, "differs": True})
    return rows


def config_rows(results: dict) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    cfg = dict(_d(results.get("config")))
    cfg.pop("prompts", None)
    _flatten("", cfg, out)
    return out


@dataclass
class ImageRow:
    prompt: str
    seed: Any
    panels: list[dict] = field(default_factory=list)


def image_rows(results: dict, results_dir: Path | None, baseline: dict | None,
               baseline_dir: Path | None, verdict: dict | None) -> list[ImageRow]:
    """One row per (prompt, seed): original, optimized, their difference; and the baseline's
    image with the difference the gate judged, when a baseline is given."""
    current_name = "optimized" if variant(results, "optimized") else "original"
    current = _l(variant(results, current_name).get("images"))
    original = {(str(i.get("prompt")), i.get("seed")): i for i in
                map(_d, _l(variant(results, "original").get("images")))}
    judged = {(str(i.get("prompt")), i.get("seed")): i for i in
              map(_d, _l(_d(_d(verdict).get("quality")).get("images")))}
    base_images = {}
    if baseline is not None:
        name = "optimized" if variant(baseline, "optimized") else "original"
        base_images = {(str(i.get("prompt")), i.get("seed")): i for i in
                       map(_d, _l(variant(baseline, name).get("images")))}
    rows = []
    for rec in map(_d, current):
        key = (str(rec.get("prompt", "")), rec.get("seed"))
        row = ImageRow(key[0], key[1])
        cur = load_image(results_dir, rec.get("path"))
        if current_name == "optimized" and key in original:
            ref = load_image(results_dir, original[key].get("path"))
            row.panels.append({"kind": "image", "title": "original", "image": ref})
            row.panels.append({"kind": "image", "title": "optimized", "image": cur})
            cmp = compare(ref, cur)
            row.panels.append({"kind": "diff", "title": "optimized vs original", "cmp": cmp,
                               "psnr": fmt.db(cmp.psnr_db), "ssim": fmt.number(cmp.ssim, 4),
                               "regressed": None})
        else:
            row.panels.append({"kind": "image", "title": current_name, "image": cur})
        j = judged.get(key)
        base_path = (j or {}).get("baseline_path") or base_images.get(key, {}).get("path")
        if base_path and baseline_dir is not None:
            b = load_image(baseline_dir, base_path)
            row.panels.append({"kind": "image", "title": "baseline", "image": b})
            cmp = compare(b, cur)
            # What the gate judged, when it judged this pair: the same metrics on the same files.
            psnr = judged_psnr_db(j) if j else cmp.psnr_db
            ssim = j.get("ssim") if j else cmp.ssim
            row.panels.append({"kind": "diff", "title": f"{current_name} vs baseline", "cmp": cmp,
                               "psnr": fmt.db(psnr), "ssim": fmt.number(ssim, 4),
                               "regressed": (j or {}).get("regressed")})
        rows.append(row)
    return rows


def history_points(results: dict, baseline: dict | None, history,
                   verdict: dict | None = None) -> list[dict]:
    """The trend chart's runs, oldest first, each with its ``role`` (history, baseline, current):
    the history's runs of this machine and workload (another size, start image or machine is
    another trend),
    the baseline and this run. A run given twice (the baseline's run is often in the history
    too) is drawn once, in its most specific role."""
    current = as_run(results, verdict)
    points: dict[tuple, dict] = {}
    for doc, role in [*((d, "history") for d in history), (baseline, "baseline"),
                      (results, "current")]:
        if not isinstance(doc, dict):
            continue
        run = current if role == "current" else as_run(doc)
        if role == "history" and not same_kind(run, current):
            continue
        key = (run.get("created_unix"), repr(sorted(_d(run.get("medians_s")).items())))
        known = {k: v for k, v in points.get(key, {}).items() if v not in (None, {}, [])}
        points[key] = {**run, **known, "role": role}
    return sorted(points.values(), key=lambda d: _num(d.get("created_unix")) or 0)


VERDICT_ICONS = {PASS: "✅", REGRESSION: "❌", NOT_COMPARABLE: "⚠️", "none": "ℹ️"}
# The page uses plain symbols: colour emoji fonts are missing on many machines (CI runners).
VERDICT_SYMBOLS = {PASS: "✓", REGRESSION: "✗", NOT_COMPARABLE: "⚠", "none": "•"}


def build_context(results: dict, results_dir: Path | None, *, baseline: dict | None = None,
                  baseline_dir: Path | None = None, verdict: dict | None = None,
                  history: Iterable[dict] = (), artifact_url: str | None = None,
                  image_base_url: str | None = None, html: bool = True) -> dict[str, Any]:
    """Everything both templates show. ``html=False`` skips reading images and building charts
    (the markdown needs neither)."""
    cfg = _d(results.get("config"))
    opt = _d(results.get("optimization"))
    view = verdict_view(verdict)
    speed, speed_kind = speedup_of(results)
    candidates = candidate_rows(results)
    counts = Counter(c["status"] for c in candidates)
    device = _d(_d(results.get("environment")).get("device"))
    model = str(cfg.get("model") or "unnamed model")
    size = f"{cfg.get('width', '?')}x{cfg.get('height', '?')} px" if cfg.get("width") else ""
    bits = [f"model {model}", size, f"{cfg['steps']} steps" if cfg.get("steps") else "",
            _count(len(_l(cfg.get("prompts"))), "prompt"),
            _count(cfg.get("runs"), "run")]
    ths = opt.get("metric_drop_ths")
    allowed = "lossless only" if ths is None else fmt.number(ths)
    env_bits = [str(device.get("name") or ""), str(device.get("kind") or ""),
                f"{device['cores']} cores" if device.get("cores") else ""]
    context: dict[str, Any] = {
        "model": model, "model_line": " · ".join(b for b in bits if b),
        "created": fmt.timestamp(results.get("created_unix")),
        "sdopt_version": str(results.get("sdopt_version") or "?"),
        "verdict": view, "verdict_icon": VERDICT_ICONS[view.state],
        "verdict_symbol": VERDICT_SYMBOLS[view.state],
        "speedup": fmt.ratio(speed) if speed else "", "speedup_kind": speed_kind,
        "summary": summary_rows(results), "candidates": candidates,
        "candidate_counts": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none",
        "search_line": (f"metric {opt.get('metric', '?')}, allowed drop {allowed}"
                        f", search took {fmt.seconds(opt.get('wall_s'))}"
                        + (f" (peak RSS {fmt.size(_num(opt.get('peak_rss_bytes')))})"
                           if _num(opt.get("peak_rss_bytes")) else "")
                        + "; latency is the median of "
                        "one UNet call, speedup is against torch_eager/fp32 in the same search, "
                        "candidates timed one after another (sequential)"
                        + (f"; the pick re-timed side by side with the original: "
                           f"{fmt.ratio(_num(opt.get('speedup')))}"
                           if opt.get("speedup_source") == "paired" else "")),
        "environment_line": " · ".join(b for b in env_bits if b),
        "artifact_url": artifact_url or "", "has_baseline": baseline is not None,
        "prompts": [str(p) for p in _l(cfg.get("prompts"))],
    }
    context.update(_markdown_images(results, baseline, image_base_url))
    if html:
        series = [(name, name, _l(_d(variant(results, name).get("latency_s")).get("samples")))
                  for name in ("original", "optimized")]
        if baseline is not None:
            base = "optimized" if variant(baseline, "optimized") else "original"
            series.insert(0, (f"baseline {base}", "baseline",
                              _l(_d(variant(baseline, base).get("latency_s")).get("samples"))))
        stage_rows = [(name, variant(results, name).get("stages_s"),
                       variant_median_s(results, name)) for name in ("original", "optimized")]
        context.update(
            charts=[charts.speedup_chart([c["raw"] for c in candidates]),
                    charts.latency_chart(series), charts.stages_chart(stage_rows),
                    charts.trend_chart(history_points(results, baseline, list(history), verdict))],
            image_rows=image_rows(results, results_dir, baseline, baseline_dir, verdict),
            environment=environment_rows(results, baseline),
            config_rows=config_rows(results), heat_full_scale=HEAT_FULL_SCALE)
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
    columns = [n for n in ("original", "optimized") if variant(results, n).get("images")]
    by_key = {n: {(str(i.get("prompt")), i.get("seed")): i.get("path")
                  for i in map(_d, _l(variant(results, n).get("images")))}
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
