"""action/run-container.sh's ``cache`` input: bad values are one ``::error`` line naming the
input, exit 2, before any image is built or pulled (the docker command here does not exist, so
reaching it would fail differently). The mount itself runs under podman in
tests/container/test_run_container.py and end to end under act in tests/container/test_cache.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_script(tmp_path: Path, cache: str) -> subprocess.CompletedProcess:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (ws / "a-file").write_text("x")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
           "GITHUB_WORKSPACE": str(ws), "SDOPT_DOCKER": str(tmp_path / "no-docker-here"),
           "SDOPT_ACTION_PATH": str(ROOT), "INPUT_CACHE": cache, "INPUT_GPUS": "none",
           "INPUT_IMAGE": "localhost/never-used"}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(ROOT / "action" / "run-container.sh")], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("cache,why", [
    ("a:b", "without ':'"),
    ("x,y", "without ':'"),
    ("line\nbreak", "line breaks"),
    ("a-file", "it is a file"),
    (".", "not the workspace"),
    ("/", "not the workspace"),
    ("sub/..", "not the workspace"),
])
def test_bad_cache_is_one_error_line_and_exit_2(tmp_path, cache, why):
    proc = run_script(tmp_path, cache)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "input 'cache'" in errors[0] and why in errors[0], errors
    assert "no-docker-here" not in proc.stderr                 # checked before any docker call


def test_home_is_refused_as_cache(tmp_path):
    proc = run_script(tmp_path, str(tmp_path / "home"))
    assert proc.returncode == 2 and "input 'cache'" in proc.stdout
