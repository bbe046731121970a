"""The results history on an orphan branch (the action's ``history_branch`` input,
action/history_branch.py over action/gitbranch.py), pushed with the real git binary to a local
bare repository standing in for the repository on GitHub (a ``file://`` GITHUB_SERVER_URL, as
tests/action/test_action_assets_git.py does): the history lands on the branch, a second run
appends, a concurrent push is retried on the new head, the bound prunes the oldest, a pull
request reads but never writes, and the report's trend chart gets the runs. Entries are real
ones (``sdopt history add`` of the recorded tiny-model results in tests/data/report)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

from action import gitbranch, history_branch  # noqa: E402
from action import main as entry  # noqa: E402
from action.inputs import read_inputs  # noqa: E402
from sdopt.errors import SdoptError  # noqa: E402
from sdopt.gate.results_history import (ENTRY_NAME, entry_for, entry_text,  # noqa: E402
                                        read_runs)
# The bare repository standing in for the one on GitHub, and git without the user's config.
from tests.action.test_action_assets_git import bare, git  # noqa: E402,F401
from tests.action.test_action_history import FORK_PR, PUSH_MAIN, PUSH_OTHER  # noqa: E402
from tests.gate.test_results_history import COMMIT, run  # noqa: E402

DATA = Path(__file__).parents[1] / "data" / "report"
BRANCH = "sdopt-history"
REPO = "octo/widgets"


def name(i: int) -> str:
    return f"20261201T0000{i:02d}.000000Z_{'a' * 12}_{i:08x}.json"


def data(i: int) -> bytes:
    return entry_text(entry_for(run(i), commit=COMMIT, verdict={"verdict": "pass"})).encode()


def branch(bare):
    return history_branch.open_branch(str(bare), BRANCH, "ghs_t0ken", "https://github.com")


def append(bare, i: int, max_runs: int = 500):
    with branch(bare) as repo:
        return history_branch.append_entry(repo, name(i), data(i), max_runs=max_runs,
                                           sleep=lambda s: None)


def files_on(bare) -> list[str]:
    return sorted(git(f"--git-dir={bare}", "ls-tree", "-r", "--name-only", BRANCH).split())


def test_the_first_run_makes_an_orphan_branch_and_the_second_appends(bare):
    first = append(bare, 1)
    assert first.attempts == 1 and first.pruned == []
    assert files_on(bare) == [f"runs/{name(1)}"]
    assert git(f"--git-dir={bare}", "rev-list", "--parents", "-n1", first.commit).split() \
        == [first.commit]                                   # no parent: shares no history
    assert git(f"--git-dir={bare}", "log", "-1", "--format=%an|%s", BRANCH).strip() == \
        f"{gitbranch.BOT_NAME}|sdopt: history entry {name(1)}"
    second = append(bare, 2)
    assert files_on(bare) == [f"runs/{name(1)}", f"runs/{name(2)}"]
    assert git(f"--git-dir={bare}", "rev-parse", f"{second.commit}^").strip() == first.commit
    blob = subprocess.run(["git", f"--git-dir={bare}", "cat-file", "blob",
                           f"{BRANCH}:runs/{name(2)}"], capture_output=True, check=True).stdout
    assert blob == data(2)                                  # pushed as sdopt wrote it


def test_a_concurrent_push_is_built_again_on_the_new_head(bare, monkeypatch):
    append(bare, 1)
    real = gitbranch.GitBranch.commit_and_push
    heads = []

    def push(self, tree, head, message):
        heads.append(head)
        if len(heads) == 1:                  # another job's push lands between fetch and push
            monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", real)
            append(bare, 2)
            monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", push)
        return real(self, tree, head, message)

    monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", push)
    done = append(bare, 3)
    assert done.attempts == 2 and heads[0] != heads[1]
    assert files_on(bare) == [f"runs/{name(i)}" for i in (1, 2, 3)]   # nobody's run lost
    assert git(f"--git-dir={bare}", "rev-parse", f"{done.commit}^").strip() == heads[1]


def test_a_branch_that_keeps_moving_gives_up_in_one_line_never_forcing(bare, monkeypatch):
    append(bare, 1)
    real = gitbranch.GitBranch.commit_and_push
    n = []

    def push(self, tree, head, message):
        n.append(1)
        monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", real)
        append(bare, 10 + len(n))
        monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", push)
        return real(self, tree, head, message)

    monkeypatch.setattr(gitbranch.GitBranch, "commit_and_push", push)
    with pytest.raises(gitbranch.BranchError, match="rejected.*history entry landed first") \
            as info:
        append(bare, 2)
    assert len(n) == gitbranch.ATTEMPTS and "\n" not in str(info.value)
    assert f"runs/{name(2)}" not in files_on(bare)          # the others' runs all stayed
    assert len(files_on(bare)) == 1 + gitbranch.ATTEMPTS


def test_the_bound_prunes_the_oldest_and_nothing_else(bare, tmp_path):
    append(bare, 1)
    work = tmp_path / "work"                 # someone adds a README and a note by hand
    git("clone", "-q", "-b", BRANCH, str(bare), str(work))
    (work / "README.md").write_text("sdopt's results history\n")
    (work / "runs" / "notes.txt").write_text("not an entry\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "readme", cwd=work)
    git("push", "-q", "origin", BRANCH, cwd=work)
    for i in (2, 3, 4):
        done = append(bare, i, max_runs=2)
    assert done.pruned == [name(2)]
    assert files_on(bare) == ["README.md", f"runs/{name(3)}", f"runs/{name(4)}",
                              "runs/notes.txt"]


def test_the_branch_is_read_into_a_history_directory_the_report_draws(bare, tmp_path):
    with branch(bare) as repo:
        got = history_branch.read_history(repo, tmp_path / "none")
    assert got.head is None and got.runs == [] and not (tmp_path / "none").exists()
    for i in (1, 2, 3):
        append(bare, i)
    with branch(bare) as repo:
        got = history_branch.read_history(repo, tmp_path / "h")
    assert len(got.runs) == 3 and [r["commit"]["id"] for r in got.runs] == [COMMIT["id"]] * 3
    assert [p.name for p in sorted((tmp_path / "h").iterdir()) if ENTRY_NAME.fullmatch(p.name)] \
        == [name(i) for i in (1, 2, 3)]
    assert read_runs(tmp_path / "h") == got.runs


def test_links_and_forged_entries_on_the_branch(bare, tmp_path):
    append(bare, 1)
    work = tmp_path / "work"
    git("clone", "-q", "-b", BRANCH, str(bare), str(work))
    os.symlink("/etc/passwd", work / "runs" / name(5))     # a link named as an entry: skipped
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "link", cwd=work)
    git("push", "-q", "origin", BRANCH, cwd=work)
    with branch(bare) as repo:
        got = history_branch.read_history(repo, tmp_path / "h")
    assert len(got.runs) == 1 and got.skipped == [name(5)]
    (work / "runs" / name(6)).write_text(json.dumps({"kind": "run-history"}))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "forged", cwd=work)
    git("push", "-q", "origin", BRANCH, cwd=work)
    with branch(bare) as repo, pytest.raises(SdoptError) as info:
        history_branch.read_history(repo, tmp_path / "h2")
    assert str(info.value).startswith(f"history branch '{BRANCH}': ") and name(6) in \
        str(info.value) and "\n" not in str(info.value)


def test_a_branch_the_command_line_recipe_made_is_read_and_appended_to(bare, tmp_path):
    """docs/history.md's command-line recipe commits ``sdopt history add``'s directory as it is
    (its marker too): the action reads it without a word about the marker, and keeps it."""
    from sdopt.gate.results_history import add_run
    from sdopt.store import MARKER_NAME

    work = tmp_path / "work"
    git("init", "-q", "-b", BRANCH, str(work))
    add_run(work / "runs", entry_for(run(0), commit=COMMIT))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "by hand", cwd=work)
    git("push", "-q", str(bare), BRANCH, cwd=work)
    with branch(bare) as repo:
        got = history_branch.read_history(repo, tmp_path / "h")
    assert len(got.runs) == 1 and got.skipped == []
    append(bare, 1)
    assert len(files_on(bare)) == 3 and f"runs/{MARKER_NAME}" in files_on(bare)


# --- the action: which events write, what the report draws, bad inputs ----------------------

def _env(tmp_path, bare, event: tuple, **inputs) -> dict[str, str]:
    from tests.action.test_action_history import _event

    env = _event(tmp_path, *event, **{"history_branch": BRANCH, **inputs})
    env.update({"GITHUB_SERVER_URL": f"file://{bare.parent.parent}", "INPUT_TOKEN": "t0k"})
    return env


def test_pushes_to_the_default_branch_add_runs_and_pull_requests_only_read(
        bare, tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    push = _env(tmp_path, bare, PUSH_MAIN)
    inp = read_inputs(push)
    assert entry.record_history(inp, push, DATA / "baseline") == 0
    assert entry.record_history(inp, push, DATA / "current") == 0
    out = capsys.readouterr().out
    assert out.count("history: added runs/") == 2 and f"to branch '{BRANCH}'" in out
    assert len(files_on(bare)) == 2

    for event in (FORK_PR, PUSH_OTHER):
        env = _env(tmp_path, bare, event)
        assert entry.record_history(read_inputs(env), env, DATA / "current") == 0
        assert "history: this run is not added" in capsys.readouterr().out
        assert len(files_on(bare)) == 2
        # ...but it reads the history for its report's trend chart.
        with entry.history_source(read_inputs(env), env) as history:
            assert "2 run(s) read from branch" in capsys.readouterr().out
            assert len(read_runs(history)) == 2
            html = tmp_path / "report.html"
            rc, errors = entry.run_sdopt(["report", str(DATA / "current"), "--html", str(html),
                                          *entry.history_args(history)], env)
            assert rc == 0, errors
        assert not history.exists()                         # a temporary copy, removed
        spec = re.search(r'<script type="application/json" data-chart="chart-trend">(.*?)'
                         r'</script>', html.read_text(encoding="utf-8"), re.S)
        assert spec and len(json.loads(spec.group(1))["data"]) > 1


def test_a_push_without_write_access_fails_in_one_line(bare, tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    env = _env(tmp_path, bare, PUSH_MAIN)
    env["GITHUB_SERVER_URL"] = f"file://{tmp_path}/nowhere"
    assert entry.record_history(read_inputs(env), env, DATA / "current") == 1
    out = capsys.readouterr().out
    assert re.search(r"::error .*::history: this run could not be added to branch "
                     r"'sdopt-history': git ls-remote", out) and out.count("::error") == 1
    # Reading it is a warning, and the report has no trend.
    with entry.history_source(read_inputs(env), env) as history:
        assert history is None
    assert "::warning" in capsys.readouterr().out


@pytest.mark.parametrize("inputs, message", [
    ({"history_branch": "bad..name"}, "input 'history_branch' is 'bad..name': expected a branch"),
    ({"history": ".h"}, "input 'history_branch' is 'sdopt-history' and input 'history' is '.h'"),
    ({"history_max_runs": "0"}, "input 'history_max_runs' is '0': expected a whole number"),
    ({"history_max_runs": "x"}, "input 'history_max_runs' is 'x'"),
    ({"history_branch": "sdopt-assets"}, "input 'history_branch' is 'sdopt-assets', the branch"),
    ({"mode": "comment", "artifact_dir": "a"}, "input 'history_branch' is set in mode 'comment'"),
])
def test_bad_inputs_are_one_error_line_naming_the_field(bare, tmp_path, capsys, inputs,
                                                        message):
    env = _env(tmp_path, bare, PUSH_MAIN, **inputs)
    with pytest.raises(SdoptError, match=re.escape(message)):
        read_inputs(env)
    assert entry.main(env=env) == 2
    out = capsys.readouterr().out
    assert out.count("::error") == 1 and message in out


def test_the_input_is_off_by_default(tmp_path, bare):
    env = _env(tmp_path, bare, PUSH_MAIN)
    del env["INPUT_HISTORY_BRANCH"]
    inp = read_inputs(env)
    assert inp.history_branch is None and inp.history is None and inp.history_max_runs == 500
    assert read_inputs(_env(tmp_path, bare, PUSH_MAIN, history_max_runs="3")).history_max_runs \
        == 3


@pytest.mark.slow  # two real benches of the tiny model
def test_the_action_end_to_end_push_then_fork_pull_request(bare, tmp_path, capsys):
    from tests.tiny_config import tiny_config

    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    (root / "sdopt.toml").write_text(tiny_config(runs=3, candidate="torch_eager/fp32"))
    (root / ".gitignore").write_text("sdopt-out/\n")
    git("add", ".", cwd=root)
    git("commit", "-q", "-m", "x", cwd=root)
    head = git("rev-parse", "HEAD", cwd=root).strip()

    assert entry.main(env=_env(tmp_path, bare, PUSH_MAIN)) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "does not exist yet" in out and "history: added runs/" in out
    (path,) = files_on(bare)
    assert f"_{head[:12]}_" in path

    assert entry.main(env=_env(tmp_path, bare, FORK_PR)) == 0
    out = capsys.readouterr().out
    assert "1 run(s) read from branch" in out and "this run is not added" in out
    assert files_on(bare) == [path]
    html = (root / "sdopt-out" / "report.html").read_text(encoding="utf-8")
    assert 'data-chart="chart-trend"' in html


def test_history_max_runs_bounds_a_history_directory_too(tmp_path, bare, capsys):
    (tmp_path / "repo").mkdir()
    env = _env(tmp_path, bare, PUSH_MAIN, history_max_runs="1")
    del env["INPUT_HISTORY_BRANCH"]
    env["INPUT_HISTORY"] = str(tmp_path / "h")
    inp = read_inputs(env)
    for _ in range(2):
        assert entry.record_history(inp, env, DATA / "current") == 0
    assert "--max-runs 1" in capsys.readouterr().out
    assert len(read_runs(tmp_path / "h")) == 1
