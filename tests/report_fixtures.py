"""Real inputs for the report tests: results directories and verdicts that follow the contract.

Made from a real tiny optimization (``sdopt.optimize_model``) and real images of the tiny
pipeline, timed end to end with per-stage hooks: no number in them is typed by hand. The
verdicts are sdopt.compare's, under gate settings chosen per scenario.

``python -m tests.report_fixtures DIR`` records a set (current run, baseline, three verdicts)
into DIR; tests/data/report was recorded so, for snapshot tests that need fixed numbers.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROMPTS = ["a photo of a cat", "a painting of a city at night"]
SEEDS = [0]
STEPS = 4


def _stage_hooks(pipe, totals: dict):
    handles = []

    def add(module, stage):
        start = {}
        handles.append(module.register_forward_pre_hook(
            lambda m, a: start.__setitem__("t", time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, a, o: totals.__setitem__(stage, totals.get(stage, 0.0)
                                               + time.perf_counter() - start["t"])))

    add(pipe.text_encoder, "text_encoder")
    add(pipe.unet, "unet")
    add(pipe.vae.decoder, "vae_decode")
    add(pipe.vae.post_quant_conv, "vae_decode")
    return handles


def _summary(samples):
    q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [0, 0, 0]
    return {"samples": samples, "median": statistics.median(samples), "iqr": q[2] - q[0],
            "mean": statistics.fmean(samples), "min": min(samples), "max": max(samples)}


def bench(subjects: dict, out_dir: Path, *, runs: int = 3, optimization=None, model="tiny"):
    """Time each (name -> (pipe, label, backend, techniques)) end to end, interleaved, and
    write its images; returns the results.json document."""
    import torch

    from sdopt import __version__
    from sdopt.device import detect, library_versions

    variants = {}
    samples = {n: [] for n in subjects}
    stages = {n: {"text_encoder": [], "unet": [], "vae_decode": []} for n in subjects}
    images = {n: [] for n in subjects}
    for run in range(runs + 1):  # run 0 is the warm-up
        for name, (pipe, *_rest) in subjects.items():
            pipe.set_progress_bar_config(disable=True)
            for i, (prompt, seed) in enumerate((p, s) for p in PROMPTS for s in SEEDS):
                totals: dict = {}
                handles = _stage_hooks(pipe, totals)
                try:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        image = pipe(prompt, num_inference_steps=STEPS,
                                     generator=torch.Generator().manual_seed(seed)).images[0]
                    elapsed = time.perf_counter() - t0
                finally:
                    for h in handles:
                        h.remove()
                if run == 0:
                    rel = f"images/{name}/{i}.png"
                    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    image.save(out_dir / rel)
                    images[name].append({"prompt": prompt, "seed": seed, "path": rel})
                    continue
                samples[name].append(elapsed)
                for stage in stages[name]:
                    stages[name][stage].append(totals.get(stage, 0.0))
    for name, (pipe, label, backend, techniques) in subjects.items():
        lat = _summary(samples[name])
        variants[name] = {
            "label": label, "backend": backend, "techniques": techniques, "latency_s": lat,
            "throughput_images_per_s": 1.0 / lat["median"],
            "stages_s": {k: statistics.median(v) for k, v in stages[name].items()},
            "peak_memory_bytes": None, "memory_kind": "rss", "images": images[name]}
    device = detect("cpu")
    return {
        "schema_version": 1, "kind": "sdopt-bench-results", "created_unix": int(time.time()),
        "sdopt_version": __version__,
        "config": {"model": model, "prompts": PROMPTS, "seeds": SEEDS, "height": 64, "width": 64,
                   "steps": STEPS, "guidance_scale": 7.5, "batch": 1, "runs": runs},
        "environment": {"device": device.fingerprint(), "libraries": library_versions(),
                        "env": {"python": platform.python_version(),
                                "variables": {k: v for k, v in os.environ.items()
                                              if k.startswith("MALLOC_")}}},
        "variants": variants, "optimization": optimization}


def make_runs(root: Path, pipe=None) -> tuple[dict, Path, dict, Path]:
    """A real search on the tiny pipeline, then two benchmarked directories: ``current``
    (original + the search's pick) and ``baseline`` (original + fp32 eager, as an older run)."""
    import sdopt

    pipe = pipe or sdopt.build_preset("tiny")
    optimized = sdopt.optimize_model(pipe, PROMPTS, metric_drop_ths=0.05,
                                     backends=["torch_eager", "torch_int8"],
                                     num_inference_steps=STEPS, repeats=2, show=False)
    sel = optimized.sdopt_result.selected
    base_dir, cur_dir = root / "baseline", root / "current"
    fp32 = sdopt.apply_variant(pipe, "torch_eager/fp32", "cpu")
    baseline = bench({"original": (pipe, "torch_eager/fp32 (original pipeline)", "torch_eager", []),
                      "optimized": (fp32, "torch_eager/fp32", "torch_eager", [])}, base_dir)
    current = bench({"original": (pipe, "torch_eager/fp32 (original pipeline)", "torch_eager", []),
                     "optimized": (optimized, sel.id, sel.backend, list(sel.techniques))},
                    cur_dir, optimization=optimized.sdopt_result.to_dict())
    for d, doc in ((base_dir, baseline), (cur_dir, current)):
        (d / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return current, cur_dir, baseline, base_dir


def verdict(cur_dir: Path, baseline: dict, base_dir: Path, *, scenario: str) -> dict:
    """The verdict ``sdopt compare`` (sdopt.compare) gives, under gate settings that make the
    real measurements a "pass" (loose thresholds), a "regression" (a PSNR floor that images of
    two different candidates do not reach) or "not_comparable" (the baseline's device
    fingerprint is another machine's)."""
    from sdopt.gate.baseline import inputs_for
    from sdopt.gate.compare import compare_results
    from sdopt.gate.config import GateConfig

    if scenario == "pass":
        gate = GateConfig(latency_tolerance=100, psnr_min_db=0, ssim_min=-1)
    elif scenario == "regression":
        gate = GateConfig(psnr_min_db=99.0)
    else:
        gate, baseline = GateConfig(), other_machine(baseline)
    doc = compare_results(inputs_for((baseline, base_dir, "baseline"), cur_dir), gate)
    assert doc["verdict"] == scenario, doc["reasons"]
    return doc


def other_machine(baseline: dict) -> dict:
    """The baseline as if measured on another machine (what not_comparable is about)."""
    doc = copy.deepcopy(baseline)
    doc["environment"]["device"]["name"] = "another CPU"
    doc["environment"]["device"]["cores"] = 64
    return doc


def record(root: Path, *, rerun: bool = True) -> None:
    """Write current/, baseline/ and one verdict per scenario into ``root`` (``rerun=False``:
    only the verdicts, from the directories already there)."""
    if rerun:
        make_runs(root)
    baseline = json.loads((root / "baseline" / "results.json").read_text(encoding="utf-8"))
    for scenario in ("pass", "regression", "not_comparable"):
        doc = verdict(root / "current", baseline, root / "baseline", scenario=scenario)
        (root / f"verdict-{scenario}.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record(Path(sys.argv[1]), rerun="--verdicts-only" not in sys.argv[2:])
