"""The action on a reproduction of a GitHub-hosted runner (issue #15's acceptance test).

On github.com the workspace belongs to the ``runner`` user (uid 1001) and the steps after the
action run as that user: actions/upload-artifact reads every file under the output directory,
the fork commenter reads the artifact, and the next job's actions/checkout runs git and cleans
the workspace. Here the workspace is chowned to uid 1001, act runs the action (the sdopt image
through podman), then a step as uid 1001 does those three things (workflows/hosted-runner.yml).
Before the fix the container ran as root and wrote 0700/0600 directories and files owned by
root: that step failed. ``SDOPT_TEST_ACTION_REV=<git revision>`` runs the same test with the
action's files (action.yml, action/) from that revision, to show it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.action.test_action_gate import CONFIG
from tests.container.conftest import install_workflow
from tests.container.test_container import PR_EVENT, podman_run, run

pytestmark = pytest.mark.container

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNNER_UID = 1001


def copy_action(ws: Path) -> None:
    """action.yml and action/ as `uses: ./` finds them: from this checkout, or from the git
    revision SDOPT_TEST_ACTION_REV names."""
    rev = os.environ.get("SDOPT_TEST_ACTION_REV")
    if not rev:
        shutil.copy2(ROOT / "action.yml", ws / "action.yml")
        shutil.copytree(ROOT / "action", ws / "action",
                        ignore=shutil.ignore_patterns("__pycache__"))
        return
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "action.yml", "action"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(ws, filter="data")


@pytest.fixture(scope="module")
def runner_workspace(tmp_path_factory, podman, sdopt_image):
    """A user repository owned by uid 1001: the action, sdopt.toml, a baseline the image itself
    measured, the hosted-runner workflow, one commit."""
    ws = tmp_path_factory.mktemp("hosted")
    os.chmod(ws.parent, 0o755)               # the runner user must reach its workspace
    os.chmod(ws, 0o755)
    copy_action(ws)
    install_workflow(ws, "hosted-runner.yml")
    (ws / "sdopt.toml").write_text(CONFIG)
    proc = podman_run(podman, sdopt_image, ws, "-c",
                      "sdopt bench --config sdopt.toml --out base-run --quiet && "
                      "sdopt baseline save --config sdopt.toml --results base-run && "
                      "rm -rf base-run", entrypoint="bash")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (ws / ".gitignore").write_text("sdopt-out/\nact-out/\nevent.json\n")
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "repo"]):
        assert run([*git, *args]).returncode == 0
    (ws / "event.json").write_text(json.dumps(PR_EVENT))
    assert run(["chown", "-R", f"{RUNNER_UID}:{RUNNER_UID}", str(ws)]).returncode == 0
    return ws


def test_outputs_readable_and_git_usable_by_the_runner_user(
        runner_workspace, act, runner_image, docker_host):
    ws = runner_workspace
    env = {**os.environ, "DOCKER_HOST": docker_host}
    proc = run([*act, "pull_request", "-W", ".github/workflows/hosted-runner.yml",
                "-P", f"ubuntu-latest={runner_image}", "--pull=false", "--bind", "--rm",
                "-e", str(ws / "event.json")], cwd=ws, env=env, timeout=1200)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    out = ws / "act-out"
    found = {p.name: p.read_text(errors="replace") for p in out.glob("*") if p.suffix != ".tar"} \
        if out.is_dir() else {}
    assert proc.returncode == 0 and "Job succeeded" in proc.stdout, (found, log)
    assert found.get("verdict") == "pass", (found, log)
    assert found["results_dir"] == str(ws / "sdopt-out")
    assert found["unreadable"] == "", found["unreadable"]           # upload-artifact reads all
    assert found["not-owned"] == "", found["not-owned"]             # nothing left owned by root
    assert found["git-status"] == "" and len(found["git-head"].strip()) == 40
    assert found.get("as-runner", "").strip() == "ok", (found, log)
    with tarfile.open(out / "results.tar") as tar:                   # the artifact's content
        names = {Path(n).name for n in tar.getnames()}
    assert {"results.json", "verdict.json", "report.md", "report.html"} <= names, names
    assert not (ws / "sdopt-out").exists()                          # cleaned by the runner user
    assert not [p.name for p in ws.iterdir() if p.name.startswith(".sdopt-")]
