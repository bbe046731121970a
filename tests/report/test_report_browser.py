"""The HTML report in real headless Chromium (Debian package ``chromium``): every chart drew,
every image loaded, nothing was fetched from the network and the console has no errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdopt.report import load_results, load_verdict, render_reports

from ..cdp import Browser, find_chromium

DATA = Path(__file__).parents[1] / "data" / "report"

CHECK = """(() => {
  const charts = [...document.querySelectorAll('[data-plotly-chart]')];
  return JSON.stringify({
    charts: charts.map(d => [d.id, !!d.querySelector('svg.main-svg')]),
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]),
    verdict: document.querySelector('#verdict h2').textContent.trim(),
  });
})()"""


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: apt-get install chromium): the "
                    "HTML report was not checked in a browser")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install "
                                            "websocket-client): no DevTools connection")
    return path


def test_demo_report_in_headless_chromium(chromium, tmp_path):
    current, cur_dir = load_results(DATA / "current")
    baseline, base_dir = load_results(DATA / "baseline")
    verdict = load_verdict(DATA / "verdict-regression.json")
    html = tmp_path / "report.html"
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir, verdict=verdict,
                   html_path=html, history=[baseline])
    n_charts = html.read_text(encoding="utf-8").count("data-plotly-chart")
    assert n_charts == 4

    with Browser(chromium) as browser:
        browser.open(html.resolve().as_uri())
        done = f"document.querySelectorAll('[data-plotly-chart] svg.main-svg').length >= {n_charts}"
        browser.wait_until(done, timeout=60)
        state = json.loads(browser.evaluate(CHECK))
        shot = tmp_path / "report.png"
        png = browser.screenshot(shot)
        errors = browser.console_errors()
        urls = browser.requested_urls()

    assert len(state["charts"]) == n_charts
    assert all(drew for _, drew in state["charts"]), state["charts"]
    assert state["images"], "the report shows images"
    assert all(complete and width > 0 for _, complete, width in state["images"]), state["images"]
    assert "Regression" in state["verdict"]
    assert errors == [], errors
    remote = [u for u in urls if not u.startswith(("file:", "data:", "about:"))]
    assert remote == [], f"the report fetched from the network: {remote}"
    from PIL import Image

    with Image.open(shot) as img:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and img.width >= 1200 and img.height > 1500
        assert len(img.convert("L").getcolors(1 << 20) or []) > 50  # something was drawn


TREND = """(() => {
  const div = document.getElementById('chart-trend');
  return JSON.stringify({
    traces: div.data.map(t => [t.name, t.x.length]),
    points: div.querySelectorAll('.scatterlayer path.point').length,
    legend: [...div.querySelectorAll('.legendtext')].map(n => n.textContent),
  });
})()"""


def test_a_24_run_history_draws_its_trend_with_the_regression_marked(chromium, tmp_path):
    from tests.report.test_charts import history_of

    current, cur_dir = load_results(DATA / "current")
    baseline, base_dir = load_results(DATA / "baseline")
    history = history_of(tmp_path / "history", 24, regression_at=17)
    html = tmp_path / "report.html"
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir,
                   verdict=load_verdict(DATA / "verdict-regression.json"), html_path=html,
                   history=history)
    with Browser(chromium) as browser:
        browser.open(html.resolve().as_uri())
        browser.wait_until("!!document.querySelector('#chart-trend svg.main-svg')", timeout=60)
        state = json.loads(browser.evaluate(TREND))
        errors = browser.console_errors()
    traces = dict(state["traces"])
    assert traces["optimized"] == traces["original"] == 26  # 24 runs, the baseline, this run
    assert traces["regression"] == 2  # run 17, and this run (its verdict is a regression)
    assert traces["this run"] == 1 and traces["baseline"] == 1
    assert state["points"] >= 2 * 26 + 4
    assert {"regression", "this run", "baseline"} <= set(state["legend"])
    assert errors == [], errors
