"""The workload ``sdopt init`` writes fits the runner it is written for (sdopt/gate/workload.py):
for every runner kind, the estimate recomputed from the generated files is under the generated
job timeout; the cost table is the measured numbers it cites; the estimate bounds measured
gate runs from above. No timing is run here: the figures come from benchmarks/results/."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from sdopt.errors import SdoptError
from sdopt.gate.scaffold import CONFIG_NAME, GATE_WORKFLOW, InitOptions, plan
from sdopt.gate.workload import (JOB_OVERHEAD_S, PROFILES, SAFETY, STEP_COSTS, TINY_COSTS,
                                 GPU_SLOWDOWN, Workload, plan_workload, runner_kind)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

RUNNERS = {"cpu": ["ubuntu-latest"], "gpu": ["self-hosted", "linux", "gpu"],
           "gpu-t4": ["gpu-t4-4-core"], "cpu-large": ["ubuntu-latest-16-cores"]}


def from_files(files: dict[str, str], kind: str) -> tuple[Workload, int]:
    """The workload as the generated files state it, and the generated timeout."""
    config = tomllib.loads(files[CONFIG_NAME])
    bench, optimize = config["bench"], config["optimize"]
    job = yaml.safe_load(files[GATE_WORKFLOW])["jobs"]["gate"]
    step = next(s for s in job["steps"] if s.get("id") == "sdopt")
    assert step["with"]["same_job"] == "auto"          # the estimate counts both sides
    assert bench.get("height") == bench.get("width")
    workload = Workload(kind=kind, model=config["model"], size=bench.get("height"),
                        steps=bench["steps"], runs=bench["runs"],
                        prompts=len(bench["prompts"]), seeds=len(bench["seeds"]),
                        time_budget_s=optimize["time_budget_s"],
                        searches="candidate" not in optimize)
    assert bench["warmup"] == 1 and bench["batch"] == 1
    assert bench["variants"] == ["original", "optimized"]
    return workload, job["timeout-minutes"]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("model", ["sd15", "org/some-sd15-finetune", "tiny", "sdxl"])
@pytest.mark.parametrize("prompts", [1, 2, 4, 8])
@pytest.mark.parametrize("candidate", [None, "torch_eager/bf16"])
def test_the_generated_workload_fits_the_generated_timeout(runner, model, prompts, candidate):
    labels = RUNNERS[runner]
    kind = runner.split("-")[0]
    files = plan(InitOptions(model=model, prompts=[f"prompt {i}" for i in range(prompts)],
                             candidate=candidate, runs_on=labels))
    workload, timeout = from_files(files, kind)
    assert workload.minutes() < timeout
    assert workload.minutes() <= SAFETY * timeout
    if model != "tiny":
        assert workload.size == PROFILES[kind].size
    # both files say what the workload was sized for, and the estimate
    for text in (files[CONFIG_NAME], files[GATE_WORKFLOW]):
        assert f"for a {kind.upper()} runner" in text
        assert f"Estimated {workload.minutes():.0f} min of the job's {timeout}-minute" in \
            " ".join(line.lstrip(" #") for line in text.splitlines())


def test_ubuntu_latest_no_longer_gets_hours_of_work():
    """Issue #19: sd15 with the old defaults (512 px, 20 steps, 10 runs, 2 prompts) on a CPU
    runner is hours, far past the 60-minute timeout init wrote; what init writes now fits."""
    old = Workload(kind="cpu", model="sd15", size=512, steps=20, runs=10, prompts=2,
                   time_budget_s=600)
    assert old.minutes() > 3 * 60 and not old.fits()       # over three hours
    new = plan(InitOptions(model="sd15"))
    workload, timeout = from_files(new, "cpu")
    assert timeout == 60 and workload.fits()
    assert (workload.size, workload.runs) == (256, 5) and workload.steps >= 4
    gpu, gpu_timeout = from_files(plan(InitOptions(model="sd15", runs_on=["gpu"])), "gpu")
    assert (gpu.size, gpu.steps, gpu.runs, gpu_timeout) == (512, 20, 10, 60)


def test_more_prompts_mean_fewer_steps_never_a_longer_job():
    steps = [plan_workload("sd15", "cpu", n).steps for n in range(1, 9)]
    assert steps == sorted(steps, reverse=True) and steps[0] == 20 and steps[-1] < 20


@pytest.mark.parametrize("steps, runs", [(50, 20), (30, None), (None, 30)])
def test_explicit_steps_and_runs_are_kept_and_the_timeout_raised(steps, runs):
    files = plan(InitOptions(model="sd15", steps=steps, runs=runs))
    workload, timeout = from_files(files, "cpu")
    assert steps is None or workload.steps == steps
    assert runs is None or workload.runs == runs
    assert timeout > 60 and workload.minutes() <= SAFETY * timeout and timeout % 10 == 0


def test_a_workload_beyond_six_hours_keeps_githubs_limit():
    huge = Workload(kind="cpu", model="sd15", size=512, steps=50, runs=50, prompts=10)
    assert huge.timeout_minutes() == 360


@pytest.mark.parametrize("labels, kind", [
    (["ubuntu-latest"], "cpu"), (["ubuntu-24.04"], "cpu"), (["ubuntu-latest-4-cores"], "cpu"),
    (["windows-latest"], "cpu"), (["self-hosted", "linux", "x64"], "cpu"),
    (["self-hosted", "linux", "gpu"], "gpu"), (["gpu-t4-4-core"], "gpu"),
    (["linux-a100"], "gpu"), (["self-hosted", "cuda12"], "gpu"), (["nvidia-l4"], "gpu"),
    (["H100"], "gpu"), (["big-runner"], "cpu"),
])
def test_the_runner_kind_comes_from_the_labels(labels, kind):
    assert runner_kind(labels) == kind
    assert runner_kind(labels, "cpu") == "cpu" and runner_kind(labels, "gpu") == "gpu"


def test_a_bad_runner_kind_is_one_line():
    with pytest.raises(SdoptError, match="--runner-kind 'tpu'"):
        plan(InitOptions(model="sd15", runner_kind="tpu"))


def test_the_cost_table_is_the_measured_numbers_it_cites():
    """STEP_COSTS and TINY_COSTS are read from benchmarks/results/ (docs in workload.py): if a
    result file is measured again, the table must be looked at again."""
    for size in (256, 512):
        doc = json.loads((RESULTS / f"peers_sd15_{size}.json").read_text())
        assert (doc["preset"], doc["size"], doc["steps"], doc["batch"]) == ("sd15", size, 20, 1)
        (unet,) = [r for r in doc["unet"] if r["row"] == "fp32_eager"]
        (image,) = [r for r in doc["rows"] if r["row"] == "fp32_eager"]
        step, rest = STEP_COSTS[("cpu", size)]
        assert step == pytest.approx(unet["call_s"], rel=0.01)
        # the rest of one image: at least what the diffusers loop measured
        assert rest >= image["median_s"] - 20 * unet["call_s"]
    noise = json.loads((RESULTS / "gate_noise_sd15.json").read_text())
    assert (noise["workload"]["height"], noise["workload"]["steps"]) == (256, 2)
    per_image = sorted(x for run in noise["runs"] for x in run["samples"]["original"])
    median = per_image[len(per_image) // 2]
    assert STEP_COSTS[("cpu", 256)][1] == pytest.approx(median - 2 * STEP_COSTS[("cpu", 256)][0],
                                                        abs=0.5)
    assert STEP_COSTS[("cpu", 512)][1] >= 4 * STEP_COSTS[("cpu", 256)][1] - 0.01

    gpu = json.loads((RESULTS / "gpu" / "bench_cuda_sd15_512.json").read_text())
    assert (gpu["config"]["height"], gpu["config"]["steps"]) == (512, 20)
    orig = gpu["variants"]["original"]
    step, rest = STEP_COSTS[("gpu", 512)]
    assert step == pytest.approx(orig["stages_s"]["unet"] / 20 * GPU_SLOWDOWN, rel=0.01)
    assert rest >= (orig["latency_s"]["median"] - orig["stages_s"]["unet"]) * GPU_SLOWDOWN

    tiny = json.loads((RESULTS / "gate_noise_tiny.json").read_text())
    assert (tiny["workload"]["height"], tiny["workload"]["steps"]) == (64, 20)
    worst = max(x for run in tiny["runs"] for samples in run["samples"].values() for x in samples)
    assert 20 * TINY_COSTS[0] + TINY_COSTS[1] >= worst


@pytest.mark.parametrize("name", ["gate_noise_sd15.json", "gate_noise_tiny.json"])
def test_the_estimate_bounds_measured_gate_runs(name):
    """Each measured gate run (its wall time, job setup aside) is within the estimate for its
    own workload: the estimate errs on the long side."""
    doc = json.loads((RESULTS / name).read_text())
    w = doc["workload"]
    pinned = not str(doc.get("candidate", "")).startswith("search")
    for run in doc["runs"]:
        prompts = 1 if doc["preset"] == "sd15" else 2       # gate_noise.py's --prompt / init's two
        estimate = Workload(kind="cpu", model=doc["preset"], size=w["height"] if doc["preset"]
                            != "tiny" else None, steps=w["steps"],
                            runs=len(next(iter(run["samples"].values()))), prompts=prompts,
                            searches=not pinned, same_job=bool(run["same_job"]))
        assert run["wall_s"] <= estimate.seconds() - JOB_OVERHEAD_S, run["scenario"]
