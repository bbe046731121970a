"""Plotly figures of the HTML report, as JSON specs that the inlined plotly.js draws.

Figures are built with plotly's Python classes (which validate every property) and serialised
to plain JSON; the page draws them with ``Plotly.newPlot`` so nothing is fetched at view time.
A chart with nothing to show is left out and the reason is shown instead of an empty frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import plotly.graph_objects as go

STATUS_COLOURS = {"selected": "#1a7f37", "ok": "#4c78a8", "rejected": "#d4a72c",
                  "failed": "#cf222e", "skipped": "#8c959f"}
VARIANT_COLOURS = {"original": "#8c959f", "optimized": "#1a7f37"}
STAGE_COLOURS = {"text_encoder": "#72b7b2", "unet": "#4c78a8", "vae_decode": "#f58518",
                 "other": "#bab0ac"}


@dataclass
class Chart:
    id: str
    title: str
    spec: dict[str, Any] | None = None
    note: str = ""
    caption: str = ""
    extra: dict = field(default_factory=dict)


def _spec(fig) -> dict[str, Any]:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=30, b=60), height=360,
                      font=dict(family="system-ui, sans-serif", size=12))
    return json.loads(fig.to_json())


def speedup_chart(candidates: list[dict]) -> Chart:
    chart = Chart("chart-speedup", "UNet speedup per candidate",
                  caption="Median UNet call latency of the original (torch_eager/fp32) divided by "
                          "the candidate's, measured in the same search. Colour: status.")
    timed = [c for c in candidates if isinstance(c.get("speedup"), (int, float))]
    if not timed:
        chart.note = "No candidate was timed (no optimization search in these results)."
        return chart
    fig = go.Figure()
    for status in STATUS_COLOURS:
        rows = [c for c in timed if c.get("status") == status]
        if rows:
            fig.add_bar(x=[str(c.get("id")) for c in rows], y=[c["speedup"] for c in rows],
                        name=status, marker_color=STATUS_COLOURS[status],
                        text=[f"{c['speedup']:.2f}x" for c in rows], textposition="outside",
                        hovertext=[str(c.get("reason") or status) for c in rows])
    fig.add_hline(y=1.0, line_dash="dot", line_color="#57606a")
    fig.update_layout(yaxis_title="speedup (x)", xaxis_tickangle=-30, barmode="group",
                      legend_title_text="status")
    fig.update_xaxes(categoryorder="array", categoryarray=[str(c.get("id")) for c in timed])
    chart.spec = _spec(fig)
    left_out = len(candidates) - len(timed)
    if left_out:
        chart.note = f"{left_out} candidate(s) were not timed (skipped or failed): see the table."
    return chart


def latency_chart(series: list[tuple[str, str, list[float]]]) -> Chart:
    """``series``: (name, colour key, per-image latency samples in seconds)."""
    chart = Chart("chart-latency", "End-to-end latency per image",
                  caption="Every timed run (one point each); box: median and quartiles.")
    series = [(n, k, s) for n, k, s in series if s]
    if not series:
        chart.note = "No latency samples in these results."
        return chart
    fig = go.Figure()
    for name, key, samples in series:
        fig.add_box(y=samples, name=name, boxpoints="all", jitter=0.4, pointpos=0,
                    marker_color=VARIANT_COLOURS.get(key, "#4c78a8"), showlegend=False)
    fig.update_layout(yaxis_title="seconds per image", yaxis_rangemode="tozero")
    chart.spec = _spec(fig)
    return chart


def stages_chart(rows: list[tuple[str, dict, float | None]]) -> Chart:
    """``rows``: (variant name, stages_s medians, median end-to-end latency)."""
    chart = Chart("chart-stages", "Where the time goes (median per image)",
                  caption="Text encoder, UNet (all steps) and VAE decode, measured with forward "
                          "hooks; 'other' is the rest of the pipeline call (scheduler, "
                          "pre/post-processing).")
    rows = [(n, s, t) for n, s, t in rows if isinstance(s, dict) and s]
    if not rows:
        chart.note = "No stage timings in these results."
        return chart
    fig = go.Figure()
    names = [n for n, _, _ in rows]
    for stage in ("text_encoder", "unet", "vae_decode"):
        fig.add_bar(y=names, x=[float(s.get(stage) or 0.0) for _, s, _ in rows], name=stage,
                    orientation="h", marker_color=STAGE_COLOURS[stage])
    other = []
    for _, s, total in rows:
        known = sum(float(v) for v in s.values() if isinstance(v, (int, float)))
        other.append(max(0.0, float(total) - known) if isinstance(total, (int, float)) else 0.0)
    if any(other):
        fig.add_bar(y=names, x=other, name="other", orientation="h",
                    marker_color=STAGE_COLOURS["other"])
    fig.update_layout(barmode="stack", xaxis_title="seconds per image",
                      height=max(220, 90 + 60 * len(rows)))
    chart.spec = _spec(fig)
    chart.spec["layout"]["height"] = max(220, 90 + 60 * len(rows))
    return chart


def trend_chart(points: list[dict]) -> Chart:
    """``points``: runs oldest first, as :func:`sdopt.report.context.history_points` gives them
    (``medians_s``, ``created_unix``, ``commit``, ``verdict``, ``role``); drawn from two."""
    chart = Chart("chart-trend", "Trend over history",
                  caption="Median end-to-end latency per image of each run on this machine and "
                          "workload: the results history (sdopt history add, --history), the "
                          "baseline (dashed line) and this run (star); a red cross marks a run "
                          "the gate judged a regression.")
    if len(points) < 2:
        chart.note = ("No earlier runs to draw a trend from: keep a results history "
                      "('sdopt history add', the action's history input) and pass it with "
                      "--history.")
        return chart
    fig = go.Figure()
    when = [datetime.fromtimestamp(p.get("created_unix") or 0, tz=timezone.utc).isoformat()
            for p in points]
    hover = [_run_label(p) for p in points]
    drawn = [key for key in ("original", "optimized")
             if any(_median(p, key) is not None for p in points)]
    for key in drawn:
        fig.add_scatter(x=when, y=[_median(p, key) for p in points], mode="lines+markers",
                        name=key, marker_color=VARIANT_COLOURS[key], hovertext=hover,
                        connectgaps=True)
    judged = drawn[-1] if drawn else "optimized"
    marks = (("regression", "x", 14, "#cf222e", lambda p: p.get("verdict") == "regression"),
             ("this run", "star", 16, "#0969da", lambda p: p.get("role") == "current"),
             ("baseline", "diamond", 13, "#57606a", lambda p: p.get("role") == "baseline"))
    for name, symbol, size, colour, chosen in marks:
        rows = [(w, _median(p, judged), h) for w, p, h in zip(when, points, hover)
                if chosen(p) and _median(p, judged) is not None]
        if rows:
            fig.add_scatter(x=[r[0] for r in rows], y=[r[1] for r in rows], mode="markers",
                            name=name, hovertext=[r[2] for r in rows],
                            marker=dict(symbol=symbol, size=size, color=colour,
                                        line=dict(width=1, color=colour)))
    base = next((p for p in points if p.get("role") == "baseline"), None)
    if base is not None and _median(base, judged) is not None:
        fig.add_hline(y=_median(base, judged), line_dash="dash", line_color="#57606a",
                      annotation_text="baseline", annotation_position="top left")
    fig.update_layout(yaxis_title="seconds per image", yaxis_rangemode="tozero",
                      xaxis_title="run (UTC)")
    chart.spec = _spec(fig)
    regressions = sum(1 for p in points if p.get("verdict") == "regression")
    chart.extra = {"runs": len(points), "regressions": regressions}
    return chart


def _median(point: dict, key: str) -> float | None:
    value = (point.get("medians_s") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _run_label(point: dict) -> str:
    """Hover text of a run: its commit, branch and verdict. A branch name comes from files others
    may write, and plotly.js reads tags (<a href>, <br>) in hover text: those characters go."""
    commit = point.get("commit") or {}
    bits = [str(commit.get("id") or "")[:12], str(commit.get("branch") or "")[:60],
            str(point.get("verdict") or ""), {"current": "this run",
                                               "baseline": "baseline"}.get(point.get("role"), "")]
    text = " · ".join(b for b in bits if b)
    return "".join(c for c in text if c.isprintable() and c not in "<>&")
