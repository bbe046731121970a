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


def test_the_branch_recipe_of_the_docs_keeps_the_history_on_a_branch(tmp_path):
    """docs/history.md's "Outside the action" block, run as written (twice: the first run makes
    the branch, the second fetches it) with a local bare repository as origin."""
    import os
    import subprocess
    import sys

    doc = (Path(__file__).parents[2] / "docs" / "history.md").read_text(encoding="utf-8")
    section = doc.split("### Outside the action: a branch with the command line", 1)[1]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(command, cwd):
        proc = subprocess.run(["bash", "-ec", command], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sh("git init -q --bare -b main origin.git && git clone -q origin.git work 2>/dev/null && "
       "cd work && git commit -q --allow-empty -m init && git push -q origin main", tmp_path)
    work = tmp_path / "work"
    for _ in range(2):
        shutil.rmtree(work / "sdopt-out", ignore_errors=True)
        shutil.copytree(DATA / "current", work / "sdopt-out")
        sh(script, work)
        sh("git worktree remove --force history-branch", work)
    sh("git clone -q -b sdopt-history origin.git check", tmp_path)
    runs = read_runs(tmp_path / "check" / "runs")
    head = sh("git rev-parse HEAD", work).strip()
    assert [r["commit"]["id"] for r in runs] == [head, head]
