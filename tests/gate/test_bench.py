import json
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from sdopt.gate.bench import BenchSettings, Subject, bench_config, run_bench, write_results
from sdopt.gate.results import PYTEST_BENCHMARK_NAME, read_results
from sdopt.gate.compare import Inputs, compare_results
from sdopt.gate.config import GateConfig, parse_config
from sdopt.errors import SdoptError
from sdopt.models import build_preset

# One thread: on a busy 2-core runner, two OpenMP threads per process stall each other badly.
BENCH = {"prompts": ["a photo of a cat"], "seeds": [0, 1], "steps": 2, "runs": 3, "batch": 2,
         "threads": 1}


def _schema(name):
    return json.loads(resources.files("sdopt").joinpath(f"schemas/{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = parse_config({"model": "tiny", "bench": BENCH,
                           # fp32 wraps the original UNet object itself: its hooks must not
                           # count the UNet twice.
                           "optimize": {"candidate": "torch_eager/fp32"}})
    results = bench_config(config, out, progress=False)
    write_results(results, out)
    return out


def test_results_follow_the_published_schema(bench_dir):
    import jsonschema

    results = read_results(bench_dir)
    jsonschema.validate(results, _schema("results"), cls=jsonschema.Draft202012Validator)
    assert set(results["variants"]) == {"original", "optimized"}
    for name, v in results["variants"].items():
        assert len(v["latency_s"]["samples"]) == 3  # runs x one call of batch 2
        assert [(i["prompt"], i["seed"]) for i in v["images"]] == [("a photo of a cat", 0),
                                                                   ("a photo of a cat", 1)]
        for image in v["images"]:
            assert (bench_dir / image["path"]).is_file()
        stages = v["stages_s"]
        assert all(stages[s] > 0 for s in ("text_encoder", "unet", "vae_decode"))
        # Medians per stage, so compared with the slowest call; a UNet counted twice (the fp32
        # variant wraps the very UNet object of the original) would exceed it.
        assert sum(stages.values()) <= v["latency_s"]["max"]
        assert v["peak_memory_bytes"] > 10 * 2**20 and v["memory_kind"] == "rss"
    assert results["variants"]["optimized"]["label"] == "torch_eager/fp32"
    assert results["environment"]["device"]["kind"] == "cpu"
    assert results["environment"]["env"]["torch_threads"] == 1
    assert results["config"]["height"] == 64 and results["config"]["model"] == "tiny"
    # Text-to-image: no start image or mask hashes (#18), as before they were recorded.
    assert not {"start_image_sha256", "mask_image_sha256"} & set(results["config"])


def test_fixed_seeds_make_an_fp32_variant_draw_the_same_images(bench_dir):
    results = read_results(bench_dir)
    verdict = compare_results(Inputs(
        {**results, "variants": {"x": results["variants"]["original"]}}, bench_dir,
        {**results, "variants": {"x": results["variants"]["optimized"]}}, bench_dir),
        GateConfig(variant="original"))
    assert all(i["psnr_db"] is None or i["psnr_db"] > 40 for i in verdict["quality"]["images"])
    assert len(verdict["quality"]["images"]) == 2


def test_pytest_benchmark_compare_reads_our_json(bench_dir, tmp_path):
    path = bench_dir / PYTEST_BENCHMARK_NAME
    data = json.loads(path.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    exe = Path(sys.executable).with_name("pytest-benchmark")
    proc = subprocess.run([str(exe), "compare", str(path), "--columns", "min,median,max,rounds"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "-original-cpu]" in proc.stdout and "-optimized-cpu]" in proc.stdout
    # A second run compared against the first, as a user would after two CI runs.
    second = tmp_path / "0002_next.json"
    second.write_text(path.read_text())
    proc = subprocess.run([str(exe), "compare", str(path), str(second), "--group-by", "name"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("-original-cpu] (") == 2  # one row per file


def _sleepy(pipe, seconds):
    pipe.unet.register_forward_hook(lambda *_: time.sleep(seconds))
    return pipe


def _as_single(results, name):
    return {**results, "variants": {"optimized": results["variants"][name]}}


def test_variants_are_interleaved_and_a_real_slowdown_is_flagged_but_no_change_is_not(tmp_path):
    order = []
    pipes = {name: build_preset("tiny") for name in ("a", "b", "slow")}
    for name, pipe in pipes.items():
        pipe.unet.register_forward_pre_hook(lambda *_, n=name: order.append(n))
    # A wall-clock delay in every UNet call (about +1.5 s per image at 2 steps), which the CPU
    # contention of a busy shared runner cannot hide.
    _sleepy(pipes["slow"], 0.5)
    settings = BenchSettings(("a photo of a cat",), (0,), None, None, 2, 7.5, 1, runs=5, warmup=1,
                             threads=1)
    subjects = [Subject(n, p, n, "torch_eager") for n, p in pipes.items()]
    results = run_bench(subjects, settings, tmp_path, progress=False)
    calls = [n for i, n in enumerate(order) if i == 0 or order[i - 1] != n]
    assert calls == ["a", "b", "slow"] * 6  # warm-up, then A B C A B C ...
    unchanged = compare_results(Inputs(_as_single(results, "a"), tmp_path,
                                       _as_single(results, "b"), tmp_path))
    assert unchanged["verdict"] == "pass", unchanged["reasons"]
    slowed = compare_results(Inputs(_as_single(results, "a"), tmp_path,
                                    _as_single(results, "slow"), tmp_path))
    assert slowed["latency"]["regressed"], slowed["latency"]
    assert slowed["latency"]["test"] == "mann-whitney-u"
    assert not slowed["quality"]["regressed"]  # a sleep changes no pixel
    stages = results["variants"]["slow"]["stages_s"]
    assert stages["unet"] > results["variants"]["a"]["stages_s"]["unet"] + 1.0


def test_read_results_refuses_other_versions_and_other_files(tmp_path, bench_dir):
    data = json.loads((bench_dir / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(SdoptError, match="schema_version is 2"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(SdoptError, match="not valid JSON"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(SdoptError, match="not an sdopt results file"):
        read_results(tmp_path)
    with pytest.raises(SdoptError, match="not found"):
        read_results(tmp_path / "missing")


@pytest.mark.parametrize("preset", ["img2img-tiny", "sd3-tiny"])
def test_the_gate_benches_other_families(tmp_path, preset):
    """Image-to-image gets the search's default start image, a DiT's transformer is the stage
    timed as the denoiser, and the optimized variant is found where the pipeline keeps it."""
    config = parse_config({"model": preset, "bench": {**BENCH, "seeds": [0], "runs": 1,
                                                     "batch": 1},
                           "optimize": {"candidate": "torch_eager/bf16"}})
    results = bench_config(config, tmp_path, progress=False)
    for name in ("original", "optimized"):
        variant = results["variants"][name]
        assert variant["stages_s"]["unet"] > 0 and variant["images"], name
    assert results["variants"]["optimized"]["backend"] == "torch_eager"
