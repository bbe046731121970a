"""A real search on the tiny pipeline (#17): the pick re-timed side by side is the figure the
summary and the saved manifest report; a bounded-out candidate is in the table with its reason;
a time budget stops the search with the best so far; exhaustive builds every candidate."""

import json

import pytest

import sdopt
from sdopt.device import detect
from sdopt.optimize import ordering
from sdopt.optimize.manifest import MANIFEST_NAME
from sdopt.optimize.request import DEFAULT_TIME_BUDGET_S, build_request
from sdopt.optimize.summary import candidates_table, summary_table

FAST = dict(num_inference_steps=4, repeats=2, show=False, backends=["torch_eager"],
            end_to_end=False)
PROMPTS = ["a photo of a cat", "a painting of a city at night"]


def _available(result):
    """The rows whose variant can run here (the others are skipped for that reason)."""
    from sdopt.backends.base import BACKENDS
    from sdopt.optimize.search import plan_candidates

    dev = detect("cpu")
    variants = {v.id: v for v in plan_candidates(dev, backends=["torch_eager"])}
    return [c for c in result.candidates
            if BACKENDS[c.backend].unavailable_reason(dev, variants[c.id]) is None]


def _text(table) -> str:
    from rich.console import Console

    console = Console(width=400, record=True, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


@pytest.fixture(scope="module")
def bf16():
    ok, why = detect("cpu").supports_bf16()
    if not ok:
        pytest.skip(f"this CPU has no bf16 ({why}): no lossy torch candidate to pick")


def test_pick_is_retimed_side_by_side_and_reported(tiny_pipe, tmp_path):
    # On the tiny UNet a torch precision change may not beat fp32 eager (the CI runner's did
    # not); OpenVINO's compiled graph removes the per-module Python overhead that dominates a
    # 5 MB model, so the pick is another candidate on any CPU.
    optimized = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05,
                                     **{**FAST, "backends": ["openvino/fp32"]})
    result = optimized.sdopt_result
    assert result.selected is not result.original, [(c.id, c.latency_s) for c in result.candidates]
    paired = result.selected.paired["unet"]
    assert paired["rounds"] >= 3 and paired["q1"] <= paired["speedup"] <= paired["q3"]
    assert result.speedup == paired["speedup"] and result.speedup_source == "paired"
    assert result.search_speedup == pytest.approx(result.original.latency_s
                                                  / result.selected.latency_s)
    data = result.to_dict()
    assert data["speedup_source"] == "paired" and data["speedup"] == paired["speedup"]
    assert json.loads(json.dumps(data))["selected"]["paired"]["unet"] == paired
    summary = _text(summary_table(result))
    assert f"{paired['speedup']:.2f}x (side by side, {paired['rounds']} rounds" in summary
    table = _text(candidates_table(result))
    assert "speedup (seq.)" in table and "side by side" in table

    saved = sdopt.save_model(optimized, tmp_path / "m")
    metrics = json.loads((saved / MANIFEST_NAME).read_text())["metrics"]
    assert metrics["speedup"] == paired["speedup"] and metrics["speedup_source"] == "paired"


def test_bounded_out_candidate_is_in_the_table_with_its_reason(tiny_pipe, monkeypatch, bf16):
    # A headroom this small makes every roofline bound ~0x: once bf16 passes, the remaining
    # float candidates cannot beat it and are not built.
    monkeypatch.setattr(ordering, "ROOFLINE_HEADROOM", 1e-9)
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, **FAST).sdopt_result
    bounded = [c for c in result.candidates if "roofline" in c.reason]
    assert bounded, [(c.id, c.reason) for c in result.candidates]
    for row in bounded:
        assert row.status == "skipped" and row.build_s is None and row.latency_s is None
        assert "cannot beat" in row.reason and "GFLOP" in row.reason


def test_time_budget_stops_the_search_with_the_best_so_far(tiny_pipe):
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, time_budget_s=1e-6,
                                  **FAST).sdopt_result
    others = [c for c in _available(result) if c.id != "torch_eager/fp32"]
    assert others and all(c.status == "skipped" for c in others)
    assert all(c.reason.startswith("optimization time budget") for c in others)
    assert any("time budget" in note and "best found" in note for note in result.notes)
    assert result.selected is result.original


def test_exhaustive_builds_every_candidate_without_a_default_budget(tiny_pipe, monkeypatch):
    monkeypatch.setattr(ordering, "ROOFLINE_HEADROOM", 1e-9)  # would bound everything out
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, exhaustive=True,
                                  **FAST).sdopt_result
    runnable = _available(result)
    assert len(runnable) >= 2
    assert all(c.build_s is not None for c in runnable), [(c.id, c.reason) for c in runnable]
    assert not any("cannot beat" in c.reason for c in result.candidates)


def test_default_budget_per_optimization_time(tiny_pipe):
    args = dict(metric_drop_ths=0.05, metric_aggregate="max", metric=None, dynamic_info=None,
                config_file=None, ignore_compilers=None, ignore_compressors=None, device="cpu",
                backends=None, height=None, width=None, num_inference_steps=4,
                guidance_scale=7.5, seed=0, n_verify=8, repeats=2, image_metric="psnr",
                end_to_end=None, reuse_search=False)
    for when in ("constrained", "unconstrained"):
        req = build_request(tiny_pipe, PROMPTS, optimization_time=when, time_budget_s=None,
                            **args)
        assert req.time_budget_s == DEFAULT_TIME_BUDGET_S[when] and not req.exhaustive
    req = build_request(tiny_pipe, PROMPTS, optimization_time="constrained", time_budget_s=None,
                        exhaustive=True, **args)
    assert req.time_budget_s is None and req.exhaustive
    with pytest.raises(sdopt.SdoptError, match="time_budget_s is -1"):
        build_request(tiny_pipe, PROMPTS, optimization_time="constrained", time_budget_s=-1,
                      **args)
