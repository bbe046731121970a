"""Which image runs on which runner (issue #16, item 6): the image that runs must be able to run
that runner's best backend. On a runner without a GPU that is OpenVINO + NNCF
(openvino/int8-inner), which only the CPU flavour had; so action/run-container.sh builds the CPU
flavour (CPU torch on Debian, as the release's -cpu image) whenever no GPU goes to the container,
and pulls the -cpu tag at a release. The GPU flavour installs OpenVINO and NNCF too, so a GPU
image run without a GPU (a pinned image, ``docker run`` on a laptop) still has the CPU winner.

The docker command here is a fake that records its arguments; the real build runs under podman
in tests/container/test_container.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "action" / "run-container.sh"

FAKE_DOCKER = """#!{python}
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["image", "inspect"]:
    sys.exit(1)
if sys.argv[1] == "inspect":
    print("0")
"""


def run_script(tmp_path: Path, **inputs: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    log = tmp_path / "docker.log"
    log.write_text("")
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, log=str(log)))
    docker.chmod(0o755)
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
           "GITHUB_WORKSPACE": str(ws), "SDOPT_DOCKER": str(docker),
           "SDOPT_ACTION_PATH": str(ROOT), "GITHUB_OUTPUT": str(tmp_path / "output"),
           **inputs}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return proc, calls


def build_args(call: list[str]) -> dict[str, str]:
    args = {}
    for flag, value in zip(call, call[1:]):
        if flag == "--build-arg":
            name, _, val = value.partition("=")
            args[name] = val
    return args


def the(calls: list[list[str]], command: str) -> list[str]:
    found = [c for c in calls if c[0] == command]
    assert len(found) == 1, calls
    return found[0]


def release_cpu_leg() -> dict:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    legs = workflow["jobs"]["image"]["strategy"]["matrix"]["include"]
    return next(leg for leg in legs if leg["flavor"] == "cpu")


def expected_cpu_args() -> dict[str, str]:
    leg = release_cpu_leg()
    return {"FLAVOR": "cpu", "BASE_IMAGE": leg["base"], "TORCH_VERSION": leg["torch"],
            "TORCH_PIP_ARGS": leg["torch_pip_args"]}


@pytest.mark.parametrize("mode", ["gate", "optimize", "comment", "merge"])
def test_a_runner_without_gpu_builds_the_cpu_flavour_of_the_release(tmp_path, mode):
    proc, calls = run_script(tmp_path, INPUT_GPUS="none", INPUT_MODE=mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = the(calls, "build")
    assert build_args(build) == expected_cpu_args()
    assert build[build.index("-t") + 1] == "sdopt-action:local-cpu"
    run = the(calls, "run")
    assert "--gpus" not in run and run[-1] == "sdopt-action:local-cpu"
    assert "image=sdopt-action:local-cpu" in (tmp_path / "output").read_text()


def test_a_gpu_runner_builds_the_gpu_flavour(tmp_path):
    proc, calls = run_script(tmp_path, INPUT_GPUS="all", INPUT_MODE="gate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = the(calls, "build")
    assert build_args(build) == {}                       # the Dockerfile's defaults: FLAVOR=gpu
    run = the(calls, "run")
    assert run[run.index("--gpus") + 1] == "all" and run[-1] == "sdopt-action:local"


def test_build_args_win_over_the_cpu_defaults(tmp_path):
    proc, calls = run_script(tmp_path, INPUT_GPUS="none",
                             INPUT_BUILD_ARGS="BASE_IMAGE=ubuntu:24.04\nEXTRA_PIP_PACKAGES=x")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = build_args(the(calls, "build"))
    assert args == {**expected_cpu_args(), "BASE_IMAGE": "ubuntu:24.04",
                    "EXTRA_PIP_PACKAGES": "x"}

    proc, calls = run_script(tmp_path, INPUT_GPUS="none", INPUT_BUILD_ARGS="FLAVOR=gpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = the(calls, "build")
    assert build_args(build) == {"FLAVOR": "gpu"}        # a chosen flavour is left alone
    assert build[build.index("-t") + 1] == "sdopt-action:local"


def test_a_release_tag_pulls_the_cpu_image_without_gpu(tmp_path):
    common = {"SDOPT_ACTION_REF": "v1.2", "SDOPT_ACTION_REPOSITORY": "Octo/Sdopt-Action"}
    proc, calls = run_script(tmp_path, INPUT_GPUS="none", **common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert the(calls, "pull") == ["pull", "ghcr.io/octo/sdopt-action:v1.2-cpu"]
    proc, calls = run_script(tmp_path, INPUT_GPUS="all", **common)
    assert the(calls, "pull") == ["pull", "ghcr.io/octo/sdopt-action:v1.2"]


def dockerfile_packages(flavor: str) -> str:
    """The pip install line of the Dockerfile's branch for ``flavor`` (extras and packages)."""
    text = (ROOT / "Dockerfile").read_text()
    branch = re.search(r'"\$\{FLAVOR\}" = ' + flavor + r" \]; then(.*?)(?:elif|else)", text,
                       re.S)
    assert branch, f"no {flavor} branch in the Dockerfile"
    return branch.group(1)


def cpu_extra() -> list[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~ ;\[]", req)[0] for req in project["optional-dependencies"]["cpu"]]


def test_every_flavour_that_can_run_without_a_gpu_has_the_cpu_winner():
    assert {"openvino", "nncf"} <= set(cpu_extra())
    assert 'extras="[cpu]"' in dockerfile_packages("cpu")
    gpu = dockerfile_packages("gpu")
    # onnxruntime-gpu has the CPU provider; the CPU onnxruntime wheel would clash with it.
    for package in ("openvino", "nncf", "onnxruntime-gpu"):
        assert re.search(rf"(?<![\w-]){package}(?![\w-])", gpu), (package, gpu)
    assert not re.search(r"(?<![\w-])onnxruntime(?![\w-])", gpu)
    # their versions come from the lock, as every other package's
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^openvino==", pins, re.M) and re.search(r"^nncf==", pins, re.M)
