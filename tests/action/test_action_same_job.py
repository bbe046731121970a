"""Same-job mode in the action: a pull request's base commit, when checked out, is measured
beside the head in one job (run drift cancels, shared slowdowns are caught); otherwise the stored
baseline, with a warning saying why. Real git repositories, the real ``sdopt gate``."""

import json
import subprocess

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import main as entry  # noqa: E402
from action.comment import ACTIONS_BOT  # noqa: E402
from action.event import from_event  # noqa: E402
from action.inputs import read_inputs  # noqa: E402
from sdopt.errors import SdoptError  # noqa: E402
from tests.action.test_action_workflow import parse_github_output  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402
from tests.tiny_config import tiny_config  # noqa: E402


def _config(candidate: str) -> str:
    return tiny_config(candidate=candidate, tail='[baseline]\npath = "baseline"\n')


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A repository whose base commit uses fp32 and whose head (the PR) uses bf16."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "sdopt.toml").write_text(_config("torch_eager/fp32"))
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    base = _git(root, "rev-parse", "HEAD")
    (root / "sdopt.toml").write_text(_config("torch_eager/bf16"))
    _git(root, "commit", "-q", "-am", "head")
    return root, base


def _env(root, tmp_path, base_sha, **inputs):
    payload = {"pull_request": {"number": 7, "head": {"sha": "b" * 40,
                                                      "repo": {"full_name": "octo/widgets"}},
                                "base": {"sha": base_sha, "repo": {"full_name": "octo/widgets"}}}}
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GITHUB_EVENT_PATH": str(tmp_path / "event.json"), "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_REPOSITORY": "octo/widgets", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "INPUT_CONFIG": str(root / "sdopt.toml"), "INPUT_OUT": str(root / "sdopt-out")}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return env


def test_the_base_commit_is_used_when_checked_out_and_never_against_an_explicit_choice(
        repo, tmp_path, capsys):
    root, base = repo
    env = _env(root, tmp_path, base)
    assert entry.same_job_base(read_inputs(env), from_event(env)) == base
    env = _env(root, tmp_path, base, baseline="git:main:baseline")
    assert entry.same_job_base(read_inputs(env), from_event(env)) is None
    env = _env(root, tmp_path, base, same_job="false")
    assert entry.same_job_base(read_inputs(env), from_event(env)) is None
    env = _env(root, tmp_path, base, same_job="true", baseline="x")
    with pytest.raises(SdoptError, match="both set"):
        entry.same_job_base(read_inputs(env), from_event(env))


def test_a_base_commit_missing_from_a_shallow_checkout_falls_back_with_a_warning(
        repo, tmp_path, capsys):
    root, _ = repo
    missing = "c" * 40
    env = _env(root, tmp_path, missing)
    assert entry.same_job_base(read_inputs(env), from_event(env)) is None
    out = capsys.readouterr().out
    assert out.startswith("::warning") and "fetch-depth: 0" in out and "cccccccccccc" in out
    env = _env(root, tmp_path, missing, same_job="true")
    with pytest.raises(SdoptError, match="not in the checkout"):
        entry.same_job_base(read_inputs(env), from_event(env))


def test_a_forged_base_sha_is_not_passed_to_git(repo, tmp_path):
    root, _ = repo
    env = _env(root, tmp_path, "--output=/tmp/x")
    assert from_event(env).base_sha is None
    assert entry.same_job_base(read_inputs(env), from_event(env)) is None


@pytest.mark.slow  # one real same-job gate of the tiny model (base and head built and timed)
def test_a_pull_request_gate_measures_base_and_head_in_one_job(repo, tmp_path, capsys):
    root, base = repo
    state = State(tokens={"rw": Token(ACTIONS_BOT)})
    with FakeGitHub(state) as gh:
        env = _env(root, tmp_path, base, token="rw")
        env["GITHUB_API_URL"] = gh.url
        code = entry.main(env=env)
        out = capsys.readouterr().out
        assert code in (0, 1), out
        verdict = json.loads((root / "sdopt-out" / "verdict.json").read_text())
        assert verdict["latency"]["decided_by"] == ["same-job"]
        assert parse_github_output((tmp_path / "output").read_text())["verdict"] == \
            verdict["verdict"]
        body = state.comments[7][0].body
        assert "Latency decided by **same-job**" in body
        assert (root / "sdopt-out" / "base" / "results.json").is_file()
