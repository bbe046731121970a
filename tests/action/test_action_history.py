"""The action's ``history`` input: every run reads the results history for the report's trend
chart; only a push to the repository's default branch adds its run, never a pull request (a
fork's least of all). Real git repositories and real ``sdopt bench`` runs of the tiny model."""

from __future__ import annotations

import json
import subprocess

import pytest

from action import main as entry
from action.event import history_refusal
from action.inputs import read_inputs
from sdopt.errors import SdoptError
from sdopt.gate.results_history import read_runs
from tests.tiny_config import tiny_config

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _event(tmp_path, name: str, payload: dict, ref: str, **inputs) -> dict[str, str]:
    (tmp_path / "event.json").write_text(json.dumps(payload))
    root = tmp_path / "repo"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GITHUB_EVENT_PATH": str(tmp_path / "event.json"), "GITHUB_EVENT_NAME": name,
           "GITHUB_REF": ref, "GITHUB_REPOSITORY": "octo/widgets",
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "INPUT_CONFIG": str(root / "sdopt.toml"), "INPUT_OUT": str(root / "sdopt-out"),
           "INPUT_MODE": "optimize", "INPUT_COMMENT": "never", "INPUT_SAME_JOB": "false"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return env


REPO = {"full_name": "octo/widgets", "default_branch": "main"}
PUSH_MAIN = ("push", {"repository": REPO}, "refs/heads/main")
PUSH_OTHER = ("push", {"repository": REPO}, "refs/heads/feature")
FORK_PR = ("pull_request", {"repository": REPO, "pull_request": {
    "number": 7, "head": {"sha": "b" * 40, "repo": {"full_name": "fork/widgets"}},
    "base": {"sha": "c" * 40, "repo": REPO}}}, "refs/pull/7/merge")
SAME_REPO_PR = ("pull_request", {"repository": REPO, "pull_request": {
    "number": 8, "head": {"sha": "b" * 40, "repo": REPO}, "base": {"sha": "c" * 40,
                                                                   "repo": REPO}}},
                "refs/heads/main")  # a forged ref changes nothing: the event decides
TARGET = ("pull_request_target", FORK_PR[1], "refs/heads/main")
WORKFLOW_RUN = ("workflow_run", {"repository": REPO, "workflow_run": {"head_sha": "b" * 40}},
                "refs/heads/main")
NO_DEFAULT = ("push", {"repository": {"full_name": "octo/widgets"}}, "refs/heads/main")


def test_only_a_push_to_the_default_branch_may_write(tmp_path):
    assert history_refusal(_event(tmp_path, *PUSH_MAIN)) is None
    for event, why in ((PUSH_OTHER, "refs/heads/feature is not the default branch (main)"),
                       (FORK_PR, "the event is pull_request"),
                       (SAME_REPO_PR, "the event is pull_request"),
                       (TARGET, "the event is pull_request_target"),
                       (WORKFLOW_RUN, "the event is workflow_run"),
                       (NO_DEFAULT, "names no default branch")):
        assert why in history_refusal(_event(tmp_path, *event)), event


def test_the_input_is_off_by_default_and_only_for_measuring_modes(tmp_path):
    assert read_inputs(_event(tmp_path, *PUSH_MAIN)).history is None
    assert read_inputs(_event(tmp_path, *PUSH_MAIN, history=".h")).history == ".h"
    env = _event(tmp_path, *PUSH_MAIN, history=".h", mode="comment", artifact_dir="a")
    with pytest.raises(SdoptError, match="input 'history' is set in mode 'comment'"):
        read_inputs(env)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / "sdopt.toml").write_text(tiny_config(runs=3, candidate="torch_eager/fp32"))
    (root / ".gitignore").write_text("sdopt-out/\n.sdopt-history/\n")
    subprocess.run([*GIT, "add", "."], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "x"], cwd=root, check=True)
    return root


def test_a_directory_sdopt_did_not_make_is_refused_before_the_run(repo, tmp_path, capsys):
    (repo / "docs").mkdir()
    (repo / "docs" / "index.md").write_text("# docs")
    code = entry.main(env=_event(tmp_path, *PUSH_MAIN, history=str(repo / "docs")))
    out = capsys.readouterr().out
    assert code == 2 and "::error" in out and "was not written by 'sdopt history add'" in out
    assert not (repo / "sdopt-out").exists()
    assert [p.name for p in (repo / "docs").iterdir()] == ["index.md"]


@pytest.mark.slow  # three real benches of the tiny model
def test_pushes_to_main_add_runs_pull_requests_only_read_them(repo, tmp_path, capsys):
    history = repo / ".sdopt-history"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert entry.main(env=_event(tmp_path, *PUSH_MAIN, history=str(history))) == 0, \
        capsys.readouterr().out
    (run,) = read_runs(history)
    assert run["commit"]["id"] == head and run["commit"]["branch"] == "main"

    assert entry.main(env=_event(tmp_path, *FORK_PR, history=str(history))) == 0
    out = capsys.readouterr().out
    assert "history: this run is not added (the event is pull_request" in out
    assert len(read_runs(history)) == 1
    # The pull request's report drew the history: the pushed run and its own.
    html = (repo / "sdopt-out" / "report.html").read_text(encoding="utf-8")
    assert 'data-chart="chart-trend"' in html

    assert entry.main(env=_event(tmp_path, *PUSH_OTHER, history=str(history))) == 0
    assert "is not the default branch" in capsys.readouterr().out
    assert len(read_runs(history)) == 1


def test_a_history_inside_the_output_directory_is_refused(repo, tmp_path, capsys):
    env = _event(tmp_path, *PUSH_MAIN, history=str(repo / "sdopt-out" / "history"))
    assert entry.main(env=env) == 2
    assert "inside input 'out'" in capsys.readouterr().out
