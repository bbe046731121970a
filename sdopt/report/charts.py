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
    """``points``: results documents, oldest first; drawn when there are at least two."""
    chart = Chart("chart-trend", "Trend over history",
                  caption="Median end-to-end latency per image of each results file given "
                          "(history, baseline, this run).")
    if len(points) < 2:
        chart.note = "Give earlier results (--history) to see a trend."
        return chart
    fig = go.Figure()
    when = [datetime.fromtimestamp(p.get("created_unix") or 0, tz=timezone.utc).isoformat()
            for p in points]
    for key in ("original", "optimized"):
        ys = [((p.get("variants") or {}).get(key) or {}).get("latency_s", {}).get("median")
              for p in points]
        if any(isinstance(y, (int, float)) for y in ys):
            fig.add_scatter(x=when, y=ys, mode="lines+markers", name=key,
                            marker_color=VARIANT_COLOURS[key],
                            hovertext=[str(p.get("label") or p.get("sdopt_version") or "")
                                       for p in points])
    fig.update_layout(yaxis_title="seconds per image", yaxis_rangemode="tozero",
                      xaxis_title="results created (UTC)")
    chart.spec = _spec(fig)
    return chart
