"""The baseline's history of runs, made by real bench runs and real saves."""

import json

import pytest

from sdopt.errors import SdoptError
from sdopt.gate.baseline import inputs_for, open_baseline, save_baseline
from sdopt.gate.bench import bench_config, write_results
from sdopt.gate.compare import compare_results
from sdopt.gate.config import GateConfig, parse_config
from sdopt.gate.history import MAX_RUNS, read_history
from sdopt.gate.latency import in_run_ratio
from sdopt.gate.results import HISTORY_NAME

BENCH = {"prompts": ["a photo of a cat"], "seeds": [0], "steps": 2, "runs": 5, "threads": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real bench runs of the tiny model (original and optimized interleaved)."""
    config = parse_config({"model": "tiny", "bench": BENCH,
                           "optimize": {"candidate": "torch_eager/bf16"}})
    out = []
    for i in range(2):
        directory = tmp_path_factory.mktemp(f"run{i}")
        write_results(bench_config(config, directory, progress=False), directory)
        out.append(directory)
    return out


def test_every_save_adds_its_run_and_the_gate_reads_them(tmp_path, runs):
    target = tmp_path / "baseline"
    save_baseline(runs[0], target)
    assert len(read_history(target)) == 1
    save_baseline(runs[1], target, update=True)
    history = read_history(target)
    assert len(history) == 2
    run = history[-1]
    results = json.loads((runs[1] / "results.json").read_text())
    assert run["medians_s"]["optimized"] == results["variants"]["optimized"]["latency_s"]["median"]
    # the paired ratio of that run, whatever this CPU makes of bf16 (emulated where it has no
    # bf16 units: over 10x the fp32 time on a Zen 3)
    assert run["ratios"]["optimized"] == pytest.approx(in_run_ratio(results, "optimized"))
    assert run["ratios"]["optimized"] > 0
    assert run["device"]["kind"] == "cpu"
    with open_baseline(target) as base:
        inputs = inputs_for(base, runs[0])
    assert len(inputs.history) == 2
    verdict = compare_results(inputs, GateConfig(min_history_runs=3))
    assert verdict["latency"]["decided_by"] == ["in-run-ratio", "absolute"]
    ratio, absolute = verdict["latency"]["checks"]
    assert "it holds 2" in ratio["note"] and "holds 2 run(s)" in absolute["note"]


def test_enough_runs_switch_the_checks_to_the_learnt_spread(tmp_path, runs):
    target = tmp_path / "baseline"
    for i in range(3):
        save_baseline(runs[i % 2], target, update=i > 0)
    with open_baseline(target) as base:
        verdict = compare_results(inputs_for(base, runs[0]), GateConfig(min_history_runs=3))
    checks = {c["name"]: c for c in verdict["latency"]["checks"]}
    assert checks["in-run-ratio"]["test"] == checks["absolute"]["test"] == "run-history-t"
    assert checks["absolute"]["based_on"] == "3 baseline runs"
    assert checks["absolute"]["allowed"] >= 1.1


def test_a_baseline_saved_before_histories_seeds_the_history_with_its_own_run(tmp_path, runs):
    target = tmp_path / "baseline"
    save_baseline(runs[0], target)
    (target / HISTORY_NAME).unlink()
    save_baseline(runs[1], target, update=True)
    assert len(read_history(target)) == 2


def test_the_history_is_capped_and_a_forged_one_is_refused(tmp_path, runs):
    target = tmp_path / "baseline"
    save_baseline(runs[0], target)
    doc = json.loads((target / HISTORY_NAME).read_text())
    doc["runs"] = doc["runs"] * (MAX_RUNS + 5)
    (target / HISTORY_NAME).write_text(json.dumps(doc))
    save_baseline(runs[1], target, update=True)
    assert len(read_history(target)) == MAX_RUNS
    doc["runs"][0]["medians_s"]["optimized"] = "fast"
    (target / HISTORY_NAME).write_text(json.dumps(doc))
    with pytest.raises(SdoptError, match=r"history.json.*field 'runs.0.medians_s.optimized'"):
        with open_baseline(target) as base:
            inputs_for(base, runs[0])
