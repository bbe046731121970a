"""The image and the action, run for real: the project's Dockerfile built with podman (CPU
torch, Debian base), the action run by nektos act through podman's Docker-compatible socket on
the tiny model, once passing and once with an injected regression that must fail the job, and
``podman run`` of the same image reproducing the gate's verdict outside any workflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.container.conftest import install_workflow

from tests.action.test_action_gate import CONFIG

pytestmark = pytest.mark.container

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PR_EVENT = {"action": "synchronize", "number": 7,
            "pull_request": {"number": 7, "head": {"sha": "a" * 40, "repo": {"full_name": "octo/widgets"}},
                             "base": {"repo": {"full_name": "octo/widgets"}}},
            "repository": {"full_name": "octo/widgets"}}


def run(cmd, *, timeout=900, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    return proc


def podman_run(podman, image, ws: Path, *args, entrypoint=None, env=None):
    """``podman run`` with the workspace mounted at its own path, as the action does it."""
    cmd = [podman, "run", "--rm", "-v", f"{ws}:{ws}", "-w", str(ws)]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return run([*cmd, image, *args])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, podman, sdopt_image):
    """A user repository: the action (as `uses: ./` finds it), sdopt.toml, a baseline that the
    image itself measured, a workflow, and a git history as act expects."""
    ws = tmp_path_factory.mktemp("repo")
    shutil.copy2(ROOT / "action.yml", ws / "action.yml")
    shutil.copytree(ROOT / "action", ws / "action",
                    ignore=shutil.ignore_patterns("__pycache__"))
    install_workflow(ws, "gate.yml")
    (ws / "sdopt.toml").write_text(CONFIG)
    proc = podman_run(podman, sdopt_image, ws, "-c",
                      "sdopt bench --config sdopt.toml --out base-run --quiet && "
                      "sdopt baseline save --config sdopt.toml --results base-run",
                      entrypoint="bash")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (ws / "baseline" / "results.json").is_file()
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "repo"]):
        assert run([*git, *args]).returncode == 0
    (ws / "event.json").write_text(json.dumps(PR_EVENT))
    return ws


def act_run(act, runner_image, docker_host, ws: Path):
    for name in ("act-out", "sdopt-out"):
        shutil.rmtree(ws / name, ignore_errors=True)
    env = {**os.environ, "DOCKER_HOST": docker_host}
    proc = run([*act, "pull_request", "-W", ".github/workflows/gate.yml",
                "-P", f"ubuntu-latest={runner_image}", "--pull=false", "--bind", "--rm",
                "-e", str(ws / "event.json")], cwd=ws, env=env, timeout=1200)
    outputs = {p.name: p.read_text() for p in (ws / "act-out").glob("*")} \
        if (ws / "act-out").is_dir() else {}
    return proc, outputs


def leftover_containers(podman, image, ws: Path) -> list[str]:
    """Containers of the image left behind by runs in this workspace (others may share podman)."""
    proc = run([podman, "ps", "-a", "--filter", f"ancestor={image}", "--format",
                "{{.ID}}"])
    left = []
    for cid in proc.stdout.split():
        workdir = run([podman, "inspect", "--format", "{{.Config.WorkingDir}}", cid]).stdout.strip()
        if workdir == str(ws):
            left.append(cid)
    return left


def inject_quality_regression(ws: Path) -> None:
    """What a bad optimization looks like to the gate: the images no longer match the baseline's."""
    pngs = list((ws / "baseline" / "images").rglob("*.png"))
    assert pngs
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
        noise = np.random.default_rng(0).integers(-90, 90, pixels.shape)
        Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(png)


def test_act_runs_the_action_pass_then_regression_and_podman_reproduces(
        workspace, act, runner_image, docker_host, podman, sdopt_image):
    ws = workspace
    proc, outputs = act_run(act, runner_image, docker_host, ws)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert outputs.get("verdict") == "pass", (outputs, log)
    assert float(outputs["speedup"] or "nan") > 0 or outputs["speedup"] == ""
    assert outputs["report_markdown"] == str(ws / "sdopt-out" / "report.md")
    assert Path(outputs["report_markdown"]).is_file()          # paths valid on the runner
    assert "Job succeeded" in proc.stdout
    assert leftover_containers(podman, sdopt_image, ws) == []     # the action cleans up after itself

    inject_quality_regression(ws)
    proc, outputs = act_run(act, runner_image, docker_host, ws)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode != 0, log
    assert "Job failed" in proc.stdout
    assert "::error title=sdopt%3A performance regression" in proc.stdout or \
        "performance regression" in proc.stdout, log
    assert outputs.get("verdict") == "regression", (outputs, log)
    assert leftover_containers(podman, sdopt_image, ws) == []
    verdict = json.loads((ws / "sdopt-out" / "verdict.json").read_text())
    assert verdict["verdict"] == "regression" and verdict["quality"]["regressed"]

    # The same image outside any workflow reproduces the CI verdict (README's `docker run`).
    proc = podman_run(podman, sdopt_image, ws, env={"INPUT_CONFIG": "sdopt.toml",
                                                    "INPUT_OUT": "local-out",
                                                    "INPUT_COMMENT": "false"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    local = json.loads((ws / "local-out" / "verdict.json").read_text())
    assert local["verdict"] == "regression"
