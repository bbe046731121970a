"""``sdopt reproduce`` (sdopt/gate/reproduce.py, sdopt/cli/reproduce.py) without a container:
the configuration rebuilt from a real results.json, the GPU request rules, the action inputs,
and the one-line errors (no daemon, no GPU, bad overrides, paths outside the mounted
repository, a broken artifact). The container runs themselves are in
tests/container/test_reproduce.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sdopt.gate.config import parse_config
from sdopt.errors import SdoptError
from sdopt.gate.reproduce import (Request, check_request, compare_with_ci, config_from_results,
                             connect, device_requests, parse_gpus, read_artifact)
from sdopt.gate.scaffold import dumps_toml

docker = pytest.importorskip("docker")

CONFIG = """\
model = "tiny"

[bench]
prompts = ["a photo of a cat", "a red bicycle"]
seeds = [0]
steps = 2
runs = 3
warmup = 0
variants = ["optimized"]

[optimize]
candidate = "torch_eager/bf16"

[gate]
latency_tolerance = 0.25
on_environment_mismatch = "warn"

[baseline]
path = "base"
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """A real results directory, as the CI job's artifact would hold it."""
    ws = tmp_path_factory.mktemp("ci")
    (ws / "sdopt.toml").write_text(CONFIG)
    proc = subprocess.run([sys.executable, "-m", "sdopt.cli", "bench", "--out", "artifact",
                           "--quiet"], cwd=ws, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws / "artifact"


def test_config_rebuilt_from_results_is_the_one_that_ran(ci_run):
    results, found, verdict = read_artifact(ci_run)
    assert found == ci_run and verdict is None
    table = config_from_results(results)
    again = tomllib.loads(dumps_toml(table))
    config = parse_config(again)
    assert config.public_dict() == results["config"]          # every recorded setting kept


def test_single_file_config_is_reproduced(ci_run):
    results, _, _ = read_artifact(ci_run)
    results = {**results, "config": {**results["config"], "model": "models/sd.safetensors",
                                     "single_file_config": "models/sd-config"}}
    table = config_from_results(results)
    assert table["model"] == "models/sd.safetensors"
    assert table["single_file_config"] == "models/sd-config"


def test_artifact_one_level_down_and_pinned_candidate(ci_run, tmp_path):
    (tmp_path / "download").mkdir()
    os.symlink(ci_run, tmp_path / "download" / "sdopt-results")
    results, found, _ = read_artifact(tmp_path / "download")
    assert found.name == "sdopt-results"
    searched = json.loads(json.dumps(results))
    searched["config"]["optimize"].update(candidate=None, metric_drop_ths=0.05,
                                          metric_aggregate="mean")
    table = config_from_results(searched, pin_candidate=True)
    assert table["optimize"]["candidate"] == results["variants"]["optimized"]["label"]
    assert "metric_drop_ths" not in table["optimize"]
    assert "metric_aggregate" not in table["optimize"], "a search setting, not a pinned one's"
    searched["optimization"] = {"selected": {"id": "openvino/bf16", "pipeline_techniques": []}}
    assert config_from_results(searched, pin_candidate=True)["optimize"]["candidate"] == \
        "openvino/bf16"
    searched["optimization"]["selected"]["pipeline_techniques"] = [{"name": "step_cache",
                                                                     "interval": 2}]
    with pytest.raises(SdoptError, match="techniques step_cache"):
        config_from_results(searched, pin_candidate=True)


@pytest.mark.parametrize("mutate,expected", [
    (lambda r: r.pop("config"), "no 'config' block"),
    (lambda r: r["config"].update(steps=0), "field 'bench.steps'"),
])
def test_bad_results_config_is_one_line(ci_run, mutate, expected):
    results = json.loads((ci_run / "results.json").read_text())
    mutate(results)
    with pytest.raises(SdoptError) as err:
        config_from_results(results, source="artifact/results.json")
    assert expected in str(err.value) and "artifact/results.json" in str(err.value)


def test_artifact_without_results(tmp_path):
    with pytest.raises(SdoptError, match="no results.json"):
        read_artifact(tmp_path)
    with pytest.raises(SdoptError, match="is not a directory"):
        read_artifact(tmp_path / "nope")


def test_compare_with_ci_of_identical_results_passes(ci_run):
    from sdopt.gate.config import GateConfig

    verdict = compare_with_ci(ci_run, json.loads((ci_run / "results.json").read_text()), ci_run,
                              GateConfig(latency_tolerance=0.25))
    assert verdict["verdict"] == "pass" and verdict["machines_differ"] is False
    assert [i["psnr_db"] for i in verdict["quality"]["images"]] == [None, None]  # identical


def test_compare_with_ci_from_another_machine_says_latency_is_indicative(ci_run, tmp_path):
    import shutil

    from sdopt.gate.config import GateConfig

    local = tmp_path / "local"
    shutil.copytree(ci_run, local)
    data = json.loads((local / "results.json").read_text())
    data["environment"]["device"]["name"] = "Some Other CPU"
    (local / "results.json").write_text(json.dumps(data))
    ci = json.loads((ci_run / "results.json").read_text())
    verdict = compare_with_ci(ci_run, ci, local, GateConfig())     # on_environment_mismatch=fail
    assert verdict["verdict"] == "pass" and verdict["machines_differ"] is True
    assert any("indicative only" in r for r in verdict["reasons"])


def test_gpu_rules():
    logged = []
    assert device_requests("auto", [], logged.append) == []
    assert "CPU backends" in logged[-1]
    assert device_requests("none", ["GPU 0: H100"], logged.append) == []
    (req,) = device_requests("auto", ["GPU 0: H100 (UUID: x)"], logged.append)
    assert req["Count"] == -1 and req["Capabilities"] == [["gpu"]]
    (req,) = device_requests("1", ["GPU 0: a", "GPU 1: b"], logged.append)
    assert req["DeviceIDs"] == ["1"]
    for mode, gpus, text in (("all", [], "no NVIDIA GPU is visible"),
                             ("2", ["GPU 0: a"], "no device 2")):
        with pytest.raises(SdoptError, match=text):
            device_requests(mode, gpus, logged.append)
    with pytest.raises(SdoptError, match="expected auto, all, none"):
        parse_gpus("yes")


def test_request_passes_the_action_inputs(tmp_path):
    req = Request(repo=tmp_path, config=tmp_path / "sdopt.toml", out=tmp_path / "o",
                  thresholds={"latency_tolerance": 0.2, "psnr_min_db": None},
                  overrides=["bench.runs = 5"], baseline="git:origin/main:.sdopt/baseline")
    env = req.environment()
    assert env["INPUT_COMMENT"] == "false" and env["INPUT_MODE"] == "gate"
    assert env["INPUT_LATENCY_TOLERANCE"] == "0.2" and "INPUT_PSNR_MIN_DB" not in env
    assert env["INPUT_CONFIG"] == str(tmp_path / "sdopt.toml")
    assert env["INPUT_CONFIG_OVERRIDES"] == "bench.runs = 5"
    assert env["INPUT_BASELINE"] == "git:origin/main:.sdopt/baseline"
    assert not any(k.startswith("INPUT_TOKEN") for k in env)


def test_paths_outside_the_mounted_repo_are_refused(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "sdopt.toml").write_text(CONFIG)
    with pytest.raises(SdoptError, match="outside the repository"):
        check_request(Request(repo=tmp_path / "repo", config=tmp_path / "sdopt.toml",
                              out=tmp_path / "repo" / "o"))
    with pytest.raises(SdoptError, match="not found"):
        check_request(Request(repo=tmp_path, config=tmp_path / "missing.toml",
                              out=tmp_path / "o"))


def test_no_daemon_is_one_line(tmp_path):
    with pytest.raises(SdoptError) as err:
        connect(f"unix://{tmp_path}/missing.sock")
    assert str(err.value).startswith("no Docker or podman socket reachable")


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "sdopt.toml").write_text(CONFIG)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "sdopt.cli", "reproduce", *args],
                              cwd=tmp_path, env={**ENV, "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=120)

    for args, text in ((["--gpus", "all", "--image", "x"], "--gpus all: no NVIDIA GPU"),
                       (["--pin-candidate"], "--pin-candidate needs --from-artifact"),
                       (["--build-arg", "NOEQUALS"], "expected NAME=value"),
                       (["--set", "runs=5"], "expected SECTION.KEY=VALUE"),
                       (["--set", "gate.tolerance=1"],
                        "unknown field 'gate.tolerance' (set by --set 'gate.tolerance=1')"),
                       (["--ssim-min", "5"], "field 'gate.ssim_min' (set by --ssim-min 5)"),
                       (["--gpus", "yes"], "--gpus: 'yes': expected auto, all, none"),
                       (["--fail-on", "always"], "--fail-on: 'always': expected"),
                       (["--from-artifact", str(tmp_path)], "no results.json")):
        if "all" in args and Path("/usr/bin/nvidia-smi").exists():
            continue
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and text in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0
