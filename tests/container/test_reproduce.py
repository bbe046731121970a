"""``sdopt reproduce`` for real: the docker SDK against podman's Docker-compatible socket, the
project's image (CPU build), the tiny model. It builds an image through the SDK (a derived
Dockerfile on top of the test image: the full Dockerfile needs a local torch wheel mounted at
build time, which the Docker build API cannot do), runs the gate in it and finds the report and
a passing verdict in the folder it names; from a CI results artifact it re-runs that artifact's
configuration, not the local sdopt.toml, and compares the two results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from sdopt.errors import SdoptError
from tests.action.test_action_gate import CONFIG

pytestmark = pytest.mark.container

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def sdopt(*args, cwd, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "sdopt.cli", *args], cwd=cwd,
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def log_of(proc) -> str:
    return proc.stdout[-6000:] + proc.stderr[-3000:]


def containers_left(podman, name: str) -> list[str]:
    proc = subprocess.run([podman, "ps", "-a", "--filter", f"name={name}", "--format",
                           "{{.Names}}"], capture_output=True, text=True)
    return proc.stdout.split()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, podman, sdopt_image):
    """A user repository with sdopt.toml and a baseline the image itself measured, committed."""
    ws = tmp_path_factory.mktemp("reproduce-repo")
    (ws / "sdopt.toml").write_text(CONFIG)
    proc = subprocess.run(
        [podman, "run", "--rm", "-v", f"{ws}:{ws}", "-w", str(ws), "--entrypoint", "bash",
         sdopt_image, "-c", "sdopt bench --config sdopt.toml --out base-run --quiet && "
                            "sdopt baseline save --config sdopt.toml --results base-run"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, log_of(proc)
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "repo"]):
        assert subprocess.run([*git, *args]).returncode == 0
    return ws


def test_reproduce_builds_runs_and_leaves_a_passing_report(workspace, docker_host, podman,
                                                           sdopt_image, tmp_path):
    ws = workspace
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {sdopt_image}\nLABEL org.sdopt.test=reproduce\n")
    proc = sdopt("reproduce", "--context", str(context), "--tag", "localhost/sdopt-reproduce:test",
                 "--gpus", "auto", "--out", "local-run", cwd=ws, env={"DOCKER_HOST": docker_host})
    log = log_of(proc)
    assert proc.returncode == 0, log
    assert "[build 2/2] LABEL org.sdopt.test=reproduce" in proc.stdout       # build streamed
    from sdopt.gate.reproduce import host_gpus

    if not host_gpus():
        assert "runs on CPU backends" in proc.stdout                       # auto, without a GPU
    assert "  | sdopt gate: PASS" in proc.stdout                           # container log streamed
    out = ws / "local-run"
    assert proc.stdout.rstrip().splitlines()[-1] == f"results: {out}"      # named at the end
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "pass"
    assert (out / "report.html").stat().st_size > 0 and (out / "report.md").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["prompts"] == ["a photo of a cat"]
    name = re.search(r"container (sdopt-reproduce-\S+) started", proc.stdout)[1]
    assert containers_left(podman, name) == []                              # cleaned up

    again = sdopt("reproduce", "--image", sdopt_image, "--out", "local-run", cwd=ws,
                  env={"DOCKER_HOST": docker_host})
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr


def test_reproduce_from_artifact_reruns_that_configuration(workspace, docker_host, sdopt_image):
    ws = workspace
    # The CI job's configuration: another seed set and run count than the local sdopt.toml.
    ci_config = CONFIG.replace("seeds = [0]", "seeds = [0, 1]").replace("runs = 5", "runs = 6")
    (ws / "ci.toml").write_text(ci_config)
    ci = sdopt("gate", "--config", "ci.toml", "--out", "ci-artifact", "--quiet", cwd=ws)
    assert ci.returncode == 0, log_of(ci)
    (ws / "ci.toml").unlink()
    local_config = (ws / "sdopt.toml").read_text()
    (ws / "sdopt.toml").write_text(local_config.replace("runs = 5", "runs = 7"))
    try:
        proc = sdopt("reproduce", "--image", sdopt_image, "--from-artifact", "ci-artifact",
                     "--out", "from-ci", cwd=ws, env={"DOCKER_HOST": docker_host})
    finally:
        (ws / "sdopt.toml").write_text(local_config)
    log = log_of(proc)
    assert proc.returncode == 0, log
    out = ws / "from-ci"
    ci_results = json.loads((ws / "ci-artifact" / "results.json").read_text())
    local = json.loads((out / "results.json").read_text())
    for key in ("model", "prompts", "seeds", "steps", "runs", "height", "width", "variants",
                "optimize", "gate"):
        assert local["config"][key] == ci_results["config"][key], key
    assert local["config"]["runs"] == 6 and local["config"]["seeds"] == [0, 1]
    assert len(local["variants"]["optimized"]["images"]) == 2

    rebuilt = tomllib.loads((out / "reproduce-config.toml").read_text())
    assert rebuilt["bench"]["runs"] == 6
    assert not list(ws.glob(".sdopt-reproduce-*.toml"))                     # temporary removed

    comparison = json.loads((out / "ci-comparison.json").read_text())
    assert comparison["kind"] == "sdopt-verdict"
    assert len(comparison["quality"]["images"]) == 2                        # local vs CI images
    assert "CI verdict:    pass -> reproduced" in proc.stdout
    assert "local vs CI:" in proc.stdout


def test_build_failure_names_the_failing_step(docker_host, podman, tmp_path):
    from sdopt.gate.reproduce import build_image, connect

    (tmp_path / "Dockerfile").write_text(
        "FROM localhost/sdopt-base\nRUN true\nRUN echo about to fail && exit 3\n")
    lines = []
    with pytest.raises(SdoptError) as err:
        build_image(connect(docker_host), tmp_path, tag="localhost/sdopt-broken:test",
                    log=lines.append)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("image build failed at step 3/3 (RUN echo about to fail && exit 3)")
    assert "  about to fail" in lines


def test_no_socket_is_one_line(tmp_path):
    (tmp_path / "sdopt.toml").write_text(CONFIG)
    proc = sdopt("reproduce", "--image", "x", "--docker-host",
                 f"unix://{tmp_path}/missing.sock", "--gpus", "none", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no Docker or podman socket reachable")
    assert proc.stderr.strip().count("\n") == 0
