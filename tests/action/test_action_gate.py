"""The action's gate mode driving the real ``sdopt gate`` on the tiny model, in-process:
a pass, then an injected quality regression (noise added to the baseline's images), each
published to the job summary, $GITHUB_OUTPUT, annotations and one upserted PR comment."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")
from PIL import Image  # noqa: E402

from action import main as entry  # noqa: E402
from action.comment import ACTIONS_BOT, marker  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402
from tests.action.test_action_workflow import parse_github_output  # noqa: E402
from tests.tiny_config import tiny_config  # noqa: E402

pytestmark = pytest.mark.slow     # three end-to-end runs of the tiny pipeline

SHA = "a" * 40
CONFIG = tiny_config(candidate="torch_eager/bf16", tail="""\
[gate]
# This test is about the action's wiring (pass, then an injected image regression), and the
# baseline is timed minutes before the current run on a shared machine: only a gross slowdown
# counts here. The latency statistics themselves are tested in test_latency.py / test_gate_cli.py.
latency_tolerance = 10.0

[baseline]
path = "baseline"
""")


def sdopt(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "sdopt.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    (ws / "sdopt.toml").write_text(CONFIG)
    sdopt("bench", "--config", "sdopt.toml", "--out", "base-run", "--quiet", cwd=ws)
    sdopt("baseline", "save", "--config", "sdopt.toml", "--results", "base-run", cwd=ws)
    return ws


def runner_env(ws, gh, tmp_path):
    payload = {"pull_request": {"number": 7, "head": {"sha": SHA, "repo": {"full_name": "octo/widgets"}},
                                "base": {"repo": {"full_name": "octo/widgets"}}}}
    (tmp_path / "event.json").write_text(json.dumps(payload))
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
            "GITHUB_EVENT_PATH": str(tmp_path / "event.json"), "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_REPOSITORY": "octo/widgets", "GITHUB_API_URL": gh.url,
            "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "INPUT_TOKEN": "rw", "INPUT_CONFIG": str(ws / "sdopt.toml"),
            "INPUT_OUT": str(ws / "sdopt-out")}


def test_gate_pass_then_injected_regression(workspace, tmp_path, capsys):
    state = State(tokens={"rw": Token(ACTIONS_BOT)})
    with FakeGitHub(state) as gh:
        env = runner_env(workspace, gh, tmp_path)
        assert entry.main(env=env) == 0, capsys.readouterr()
        outputs = parse_github_output((tmp_path / "output").read_text())
        assert outputs["verdict"] == "pass"
        assert outputs["report_markdown"] and outputs["verdict_json"]
        assert json.loads((workspace / "sdopt-out" / "github-context.json").read_text())["number"] == 7
        first = state.comments[7][0]
        assert first.body.startswith(marker()) and "pass" in first.body.lower()

        for png in (workspace / "baseline" / "images").rglob("*.png"):
            pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
            noise = np.random.default_rng(0).integers(-90, 90, pixels.shape)
            Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(png)
        (tmp_path / "output").unlink()
        capsys.readouterr()
        assert entry.main(env=env) == 1
        out = capsys.readouterr().out
        assert "::error title=sdopt%3A performance regression" in out
        outputs = parse_github_output((tmp_path / "output").read_text())
        assert outputs["verdict"] == "regression"
        assert len(state.comments[7]) == 1                 # updated, not duplicated
        assert "regression" in state.comments[7][0].body.lower()
        # one check run per run, on the PR's head: the pass, then the regression (issue #19)
        assert [(r["name"], r["head_sha"], r["conclusion"]) for r in state.check_runs] == \
            [("sdopt", SHA, "success"), ("sdopt", SHA, "failure")]
        assert state.check_runs[1]["output"]["summary"].startswith("**Verdict: REGRESSION**")
        assert "regression" in (tmp_path / "summary.md").read_text().lower()
