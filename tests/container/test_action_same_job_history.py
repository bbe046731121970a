"""The action's noise controls and results history under nektos act, on the image built from the
Dockerfile (#19): a push to main adds its run to the history input's directory; a pull request
then measures its base commit beside the head in the same job (``same_job: true``), leaves the
history as it was and draws it in the report's trend chart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sdopt.gate.results_history import read_runs
from tests.container.conftest import install_workflow
from tests.tiny_config import tiny_config

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = "same-job-history.yml"
# Identical code on both sides; this test is about the wiring, not the latency statistics.
CONFIG = tiny_config(runs=3, candidate="torch_eager/fp32",
                     tail="[gate]\nlatency_tolerance = 10.0\n")
REPO = {"full_name": "octo/widgets", "default_branch": "main"}


def _git(ws: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(ws), "-c", "user.name=t",
                           "-c", "user.email=t@example.invalid", *args],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repository with a base commit and a head commit (the pull request's)."""
    ws = tmp_path_factory.mktemp("repo")
    shutil.copy2(ROOT / "action.yml", ws / "action.yml")
    shutil.copytree(ROOT / "action", ws / "action", ignore=shutil.ignore_patterns("__pycache__"))
    install_workflow(ws, WORKFLOW)
    (ws / "sdopt.toml").write_text(CONFIG)
    (ws / ".gitignore").write_text("sdopt-out/\n.sdopt-history/\nact-out/\nevent-*.json\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "base")
    base = _git(ws, "rev-parse", "HEAD")
    (ws / "sdopt.toml").write_text(CONFIG + "# the pull request's change\n")
    _git(ws, "commit", "-q", "-am", "head")
    return ws, base, _git(ws, "rev-parse", "HEAD")


def act_run(act, runner_image, docker_host, ws: Path, event: str, payload: dict):
    for name in ("act-out", "sdopt-out"):
        shutil.rmtree(ws / name, ignore_errors=True)
    (ws / f"event-{event}.json").write_text(json.dumps(payload))
    proc = subprocess.run([*act, event, "-W", f".github/workflows/{WORKFLOW}",
                           "-P", f"ubuntu-latest={runner_image}", "--pull=false", "--bind",
                           "--rm", "-e", str(ws / f"event-{event}.json")],
                          cwd=ws, env={**os.environ, "DOCKER_HOST": docker_host},
                          capture_output=True, text=True, timeout=1500)
    verdict = ws / "act-out" / "verdict"
    return proc, verdict.read_text() if verdict.is_file() else None


def test_push_adds_to_the_history_and_a_pull_request_runs_same_job_and_only_reads_it(
        workspace, act, runner_image, docker_host, sdopt_image):
    ws, base, head = workspace
    proc, verdict = act_run(act, runner_image, docker_host, ws, "push",
                            {"ref": "refs/heads/main", "after": head, "repository": REPO})
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert verdict == "none", log  # mode optimize on pushes: nothing to judge
    (run,) = read_runs(ws / ".sdopt-history")
    assert run["commit"]["id"] == head and run["commit"]["branch"] == "main", run["commit"]

    pull_request = {"action": "synchronize", "number": 7, "repository": REPO, "pull_request": {
        "number": 7, "head": {"sha": head, "repo": {"full_name": "octo/widgets"}},
        "base": {"sha": base, "repo": {"full_name": "octo/widgets"}}}}
    proc, verdict = act_run(act, runner_image, docker_host, ws, "pull_request", pull_request)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert verdict == "pass", log
    judged = json.loads((ws / "sdopt-out" / "verdict.json").read_text())
    assert judged["latency"]["decided_by"] == ["same-job"], judged["latency"]
    assert (ws / "sdopt-out" / "base" / "results.json").is_file()
    assert "history: this run is not added (the event is pull_request" in proc.stdout
    assert len(read_runs(ws / ".sdopt-history")) == 1
    assert 'data-chart="chart-trend"' in (ws / "sdopt-out" / "report.html").read_text()
