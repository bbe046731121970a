"""The trend chart (sdopt/report/charts.py trend_chart) from a results history: one line per
variant over the runs of this machine and workload, the baseline, this run and the runs the gate
judged a regression marked."""

from __future__ import annotations

import copy
from pathlib import Path

from sdopt.gate.results import read_results
from sdopt.gate.results_history import add_run, entry_for, read_runs
from sdopt.report import build_context, load_history, load_verdict

DATA = Path(__file__).parents[1] / "data" / "report"


def history_of(directory: Path, n: int, *, regression_at: int | None = None,
               other_size_every: int = 0) -> list[dict]:
    """``n`` runs of the recorded results a day apart, before the recorded ones (a regression
    triples the optimized median at ``regression_at``), written with sdopt history's own writer
    and read back through the report's loader."""
    recorded = read_results(DATA / "current")
    for i in range(n):
        doc = copy.deepcopy(recorded)
        doc["created_unix"] = recorded["created_unix"] - (n - i) * 86_400 - 10 * 86_400
        for v in doc["variants"].values():
            v["latency_s"]["median"] *= 1 + 0.02 * (i % 4)
        verdict = None
        if i == regression_at:
            doc["variants"]["optimized"]["latency_s"]["median"] *= 3
            verdict = {"verdict": "regression"}
        if other_size_every and i % other_size_every == 0:
            doc["config"]["height"] = doc["config"]["height"] * 2
        commit = {"id": f"{i:02d}" + "a" * 38, "branch": "main"}
        add_run(directory, entry_for(doc, commit=commit, verdict=verdict))
    assert len(read_runs(directory)) == n
    return load_history([directory])


def _trend(context: dict) -> dict:
    (chart,) = [c for c in context["charts"] if c.id == "chart-trend"]
    return chart


def test_the_trend_marks_regressions_the_baseline_and_this_run(tmp_path):
    current = read_results(DATA / "current")
    baseline = read_results(DATA / "baseline")
    history = history_of(tmp_path / "h", 20, regression_at=12, other_size_every=5)
    chart = _trend(build_context(current, DATA / "current", baseline=baseline, history=history,
                                 verdict=load_verdict(DATA / "verdict-pass.json")))
    traces = {t["name"]: t for t in chart.spec["data"]}
    # 16 runs of this size (4 were of another size), the baseline and this run.
    assert len(traces["optimized"]["y"]) == len(traces["original"]["y"]) == 18
    assert len(traces["regression"]["y"]) == 1
    assert traces["regression"]["y"][0] == max(traces["optimized"]["y"])
    assert traces["regression"]["hovertext"][0].startswith("12aaaaaaaaaa · main · regression")
    assert len(traces["this run"]["y"]) == 1 and len(traces["baseline"]["y"]) == 1
    shapes = chart.spec["layout"]["shapes"]
    assert len(shapes) == 1 and shapes[0]["y0"] == traces["baseline"]["y"][0]
    assert chart.extra == {"runs": 18, "regressions": 1}


def test_without_earlier_runs_the_chart_says_how_to_get_one():
    current = read_results(DATA / "current")
    chart = _trend(build_context(current, DATA / "current"))
    assert chart.spec is None and "sdopt history add" in chart.note


def test_hover_text_from_a_history_cannot_carry_markup(tmp_path):
    current = read_results(DATA / "current")
    doc = copy.deepcopy(current)
    doc["created_unix"] -= 86_400
    add_run(tmp_path / "h", entry_for(doc, commit={"id": "a" * 40,
                                                   "branch": "<a href='javascript:x'>b</a>"}))
    chart = _trend(build_context(current, DATA / "current", history=load_history([tmp_path / "h"])))
    hover = chart.spec["data"][0]["hovertext"][0]
    assert "<" not in hover and ">" not in hover and "aaaaaaaaaaaa" in hover
