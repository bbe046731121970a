"""action/run-container.sh with real podman (issue #15): what reaches the container.

The image here is the Debian base with an entrypoint that prints its user, HOME and environment,
so the test sees exactly what the sdopt image's entrypoint would get: the workspace owner's
uid (not root), a writable HOME, and an allow-list of variables (the action's inputs with the
token, the non-secret GitHub context) without the runner's tokens (GITHUB_TOKEN, the OIDC and
runtime ACTIONS_* tokens, HF_TOKEN) or its files (GITHUB_ENV, GITHUB_PATH)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.container.conftest import BASE_IMAGE

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
ENV_IMAGE = "localhost/sdopt-envdump:test"
SECRET = "s3cr3t-value-0123456789"


@pytest.fixture(scope="module")
def env_image(podman) -> str:
    with tempfile.TemporaryDirectory() as ctx:
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            'ENTRYPOINT ["sh", "-c", "echo uid=$(id -u):$(id -g); touch \\"$HOME/w\\" && '
            'echo home-writable; touch written-by-container; env"]\n')
        proc = subprocess.run([podman, "build", "-q", "-t", ENV_IMAGE, ctx],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ENV_IMAGE


def test_the_container_runs_as_the_workspace_owner_with_an_allow_listed_environment(
        tmp_path, podman, env_image):
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chown(ws, 1001, 1001)
    event = tmp_path / "event.json"
    event.write_text("{}")
    env = {"PATH": os.environ["PATH"], "GITHUB_WORKSPACE": str(ws), "SDOPT_DOCKER": podman,
           "SDOPT_ACTION_PATH": str(ROOT), "GITHUB_EVENT_PATH": str(event),
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
           "INPUT_IMAGE": env_image, "INPUT_GPUS": "none", "INPUT_TOKEN": SECRET,
           "INPUT_COMMENT_KEY": "leg-1", "GITHUB_SHA": "a" * 40, "GITHUB_REPOSITORY": "o/r",
           "GITHUB_API_URL": "https://api.github.com", "HF_HOME": "/cache/hf", "CI": "true",
           "SDOPT_CACHE": "/cache/sdopt",
           # never to be passed on:
           "GITHUB_TOKEN": SECRET, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": SECRET,
           "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example", "ACTIONS_RUNTIME_TOKEN": SECRET,
           "ACTIONS_CACHE_URL": "https://cache.example", "HF_TOKEN": SECRET,
           "HUGGING_FACE_HUB_TOKEN": SECRET, "SDOPT_HUB_TOKEN": SECRET,
           "GITHUB_ENV": str(tmp_path / "genv"), "GITHUB_PATH": str(tmp_path / "gpath"),
           "AWS_SECRET_ACCESS_KEY": SECRET}
    proc = subprocess.run(["bash", str(ROOT / "action" / "run-container.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    seen = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("::"))
    assert "uid=1001:1001" in lines and "home-writable" in lines
    assert seen["HOME"] == "/tmp"
    assert seen["INPUT_TOKEN"] == SECRET                  # the action's comment needs it
    assert {k: seen.get(k) for k in ("INPUT_COMMENT_KEY", "GITHUB_SHA", "GITHUB_REPOSITORY",
                                     "GITHUB_API_URL", "HF_HOME", "CI", "SDOPT_CACHE")} == \
        {k: env[k] for k in ("INPUT_COMMENT_KEY", "GITHUB_SHA", "GITHUB_REPOSITORY",
                             "GITHUB_API_URL", "HF_HOME", "CI", "SDOPT_CACHE")}
    leaked = sorted(k for k, v in seen.items() if SECRET in v and k != "INPUT_TOKEN")
    assert leaked == []
    assert not any(k.startswith("ACTIONS_") for k in seen)
    assert "GITHUB_ENV" not in seen and "GITHUB_PATH" not in seen
    assert os.stat(ws / "written-by-container").st_uid == 1001
    assert not [p for p in ws.iterdir() if p.name.startswith(".sdopt-action")]


def test_the_cache_input_is_mounted_as_sdopt_cache_and_hf_home(tmp_path, podman, env_image):
    """``cache: .sdopt-cache`` (relative to the workspace): created, owned by the workspace's
    owner (who saves it with actions/cache afterwards), and the container sees SDOPT_CACHE
    there and HF_HOME under it, over the runner's own HF_HOME."""
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chown(ws, 1001, 1001)
    env = {"PATH": os.environ["PATH"], "GITHUB_WORKSPACE": str(ws), "SDOPT_DOCKER": podman,
           "SDOPT_ACTION_PATH": str(ROOT), "GITHUB_OUTPUT": str(tmp_path / "output"),
           "INPUT_IMAGE": env_image, "INPUT_GPUS": "none", "INPUT_CACHE": ".sdopt-cache",
           "HF_HOME": "/runner/hf"}
    proc = subprocess.run(["bash", str(ROOT / "action" / "run-container.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = dict(line.split("=", 1) for line in proc.stdout.splitlines()
                if "=" in line and not line.startswith("::"))
    cache = ws / ".sdopt-cache"
    assert seen["SDOPT_CACHE"] == str(cache)
    assert seen["HF_HOME"] == str(cache / "huggingface")
    assert cache.is_dir() and cache.stat().st_uid == 1001
    assert "image=" + env_image in (tmp_path / "output").read_text()
