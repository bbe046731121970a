"""Warm caches between runs (issue #15's acceptance test): the action's ``cache`` input under
nektos act with podman. Two runs of the tiny config (a real search: no pinned candidate) in one
workspace owned by the runner user (uid 1001); the second run's optimize stage (results.json's
``optimization.wall_s``) must be at most 20% of the first's and say it reused the search. The
times are printed (``pytest -s``) rather than asserted absolutely: the machine is shared.

The ``act`` fixture maps actions/upload-artifact@v4 to a stand-in (conftest.UPLOAD_STAND_IN)
whose only step writes a file; the test checks that file never appears: the action's upload
step is skipped under act (``!env.ACT``), as documented."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.container.conftest import UPLOAD_RAN, install_workflow
from tests.container.test_container import PR_EVENT, run
from tests.container.test_hosted_runner import RUNNER_UID, copy_action
from tests.tiny_config import tiny_config

pytestmark = pytest.mark.container

HERE = Path(__file__).resolve().parent

CONFIG = tiny_config(runs=3)


@pytest.fixture(scope="module")
def cache_workspace(tmp_path_factory, podman, sdopt_image):
    ws = tmp_path_factory.mktemp("cache")
    os.chmod(ws.parent, 0o755)
    os.chmod(ws, 0o755)
    copy_action(ws)
    install_workflow(ws, "cache.yml")
    (ws / "sdopt.toml").write_text(CONFIG)
    (ws / ".gitignore").write_text("sdopt-out/\n.sdopt-cache/\nevent.json\n")
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "repo"]):
        assert run([*git, *args]).returncode == 0
    (ws / "event.json").write_text(json.dumps(PR_EVENT))
    assert run(["chown", "-R", f"{RUNNER_UID}:{RUNNER_UID}", str(ws)]).returncode == 0
    return ws


def act_run(act, runner_image, docker_host, ws: Path) -> tuple[dict, str, float]:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    start = time.monotonic()
    proc = run([*act, "pull_request", "-W", ".github/workflows/cache.yml",
                "-P", f"ubuntu-latest={runner_image}", "--pull=false", "--bind", "--rm",
                "-e", str(ws / "event.json")], cwd=ws, env=env, timeout=1200)
    took = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Job succeeded" in proc.stdout, log[-6000:]
    results = json.loads((ws / "sdopt-out" / "results.json").read_text())
    return results, log, took


def test_second_run_reuses_the_search_from_the_cache(cache_workspace, act, runner_image,
                                                      docker_host):
    ws = cache_workspace
    first, log1, took1 = act_run(act, runner_image, docker_host, ws)
    cache = ws / ".sdopt-cache"
    assert cache.is_dir() and any(cache.rglob("*")), "the cache directory stayed empty"
    assert cache.stat().st_uid == RUNNER_UID                   # the runner user can save it
    assert "reused the search" not in log1
    second, log2, took2 = act_run(act, runner_image, docker_host, ws)
    wall1, wall2 = first["optimization"]["wall_s"], second["optimization"]["wall_s"]
    print(f"\noptimize stage: first run {wall1:.2f} s, second run {wall2:.2f} s "
          f"({wall2 / wall1:.1%}); whole act runs {took1:.0f} s and {took2:.0f} s")
    notes = " ".join(second["optimization"].get("notes") or [])
    assert "reused the search" in notes, notes
    assert "reused the search" in log2                         # the job's log says so
    assert "sdopt cache: " in log2 and "HF_HOME=" in log2
    assert wall2 <= 0.2 * wall1, (wall1, wall2)
    assert "::error" not in log2
    assert not (ws / UPLOAD_RAN).exists()          # the upload step was skipped
