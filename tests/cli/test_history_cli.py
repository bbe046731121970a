"""``sdopt history add / show`` and ``sdopt report --history DIR`` on recorded results (a real
results directory and verdict of the tiny model, tests/data/report)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from sdopt.cli import main
from sdopt.gate.results_history import read_runs

DATA = Path(__file__).parents[1] / "data" / "report"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_add_then_show_then_draw(tmp_path):
    results = tmp_path / "current"
    shutil.copytree(DATA / "current", results)
    shutil.copy(DATA / "verdict-regression.json", results / "verdict.json")
    history = tmp_path / "history"
    code, out = run("history", "add", DATA / "baseline", "--to", history, "--repo", tmp_path)
    assert code == 0, out
    assert re.fullmatch(rf"history: added {re.escape(str(history))}/\d{{8}}T\d{{6}}\.\d{{6}}Z_"
                        r"unversioned_[0-9a-f]{8}\.json\n", out)
    code, out = run("history", "add", results, "--to", history, "--repo", tmp_path)
    assert code == 0, out
    assert [r["verdict"] for r in read_runs(history)] == [None, "regression"]
    code, out = run("history", "show", history)
    assert code == 0 and out.count("\n") == 2 and "optimized" in out, out
    assert out.splitlines()[1].endswith("regression")

    html = tmp_path / "report.html"
    code, out = run("report", results, "--history", history, "--html", html)
    assert code == 0, out
    spec = _trend_spec(html.read_text(encoding="utf-8"))
    names = [t["name"] for t in spec["data"]]
    # The history's second run is this very run (same time and medians): drawn once, as this
    # run, with the verdict the history recorded for it.
    assert names[-2:] == ["regression", "this run"], names
    assert len(spec["data"][names.index("optimized")]["y"]) == 2

    code, out = run("history", "add", results, "--to", history, "--verdict",
                    DATA / "verdict-pass.json", "--max-runs", 1)
    assert code == 0 and "removed the 2 oldest" in out, out
    assert [r["verdict"] for r in read_runs(history)] == ["pass"]


def _trend_spec(html: str) -> dict:
    found = re.search(r'<script type="application/json" data-chart="chart-trend">(.*?)</script>',
                      html, re.S)
    assert found, "the trend chart was drawn"
    return json.loads(found.group(1))


def test_bad_history_directories_are_one_error_line(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print()")
    for args, text in (
            (("history", "add", DATA / "current", "--to", tmp_path / "src"),
             "was not written by 'sdopt history add'"),
            (("history", "add", tmp_path / "nothing", "--to", tmp_path / "h"), "not found"),
            (("history", "show", tmp_path / "src"), "was not written by 'sdopt history add'"),
            (("report", DATA / "current", "--history", tmp_path / "src", "--markdown",
              tmp_path / "r.md"), "was not written by 'sdopt history add'")):
        code, out = run(*args)
        assert code == 2 and out.startswith("error: ") and out.count("\n") == 1, (args, out)
        assert text in out, (args, out)
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["main.py"]
