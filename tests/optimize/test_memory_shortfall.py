"""A candidate whose build needs more memory than is available is skipped with the figures (#18):
the search on the SDXL UNet stalled a 24 GiB machine in one build, where a skipped row and a
finished search were what the user needed."""

import pytest

import sdopt
from sdopt.backends import load_builtin_backends
from sdopt.backends.base import BACKENDS, fp32_weights_bytes
from sdopt.device import detect
from sdopt.optimize import search
from sdopt.optimize.memory import shortfall_reason
from sdopt.optimize.search import memory_reason, plan_candidates

GIB = 2**30


def test_the_reason_names_the_need_the_weights_and_what_is_available():
    assert shortfall_reason(1.4, 10 * GIB, 20 * GIB) is None
    assert shortfall_reason(None, 10 * GIB, 1 * GIB) is None, "not measured: not checked"
    assert shortfall_reason(1.4, 10 * GIB, None) is None, "unknown memory: not checked"
    why = shortfall_reason(1.4, 10 * GIB, 9.5 * GIB)
    assert why == ("needs about 14.0 GiB more memory (1.4 x the 10.0 GiB of fp32 weights, "
                   "measured) and 9.5 GiB is available: building it would stall the machine "
                   "or get the search killed")


def test_every_cpu_candidate_but_the_original_has_a_measured_need():
    load_builtin_backends()
    cpu = detect("cpu")
    for variant in plan_candidates(cpu):
        copies = BACKENDS[variant.backend].memory_copies(variant)
        if variant.id == "torch_eager/fp32":
            assert copies is None, "the original itself: no copy"
        elif variant.backend == "torch_compile":
            assert copies is None  # not measured: its builds are bounded out on CPU anyway
        elif BACKENDS[variant.backend].unavailable_reason(cpu, variant) is None:
            assert copies and 0.4 <= copies <= 6, variant.id


def test_min_max_int8_with_the_captures_ranges_needs_no_statistics_pass_memory(monkeypatch):
    """0.65 copies measured with the capture's ranges, 1.11 with a bf16 statistics pass
    (benchmarks/candidate_memory.py): after the SDXL pipeline (13.6 GiB) a 24 GiB machine has
    room for the first, not the second."""
    from sdopt.backends.base import BuildContext

    load_builtin_backends()
    cpu = detect("cpu")
    variant = next(v for v in plan_candidates(cpu) if v.id == "openvino/int8-minmax")
    backend = BACKENDS["openvino"]
    without = BuildContext(device=cpu, example=None)
    recorded = BuildContext(device=cpu, example=None, calibration_ranges=[{"x": (0.0, 1.0)}])
    assert backend.memory_copies(variant) == backend.memory_copies(variant, without) == 1.2
    assert backend.memory_copies(variant, recorded) == 0.7
    monkeypatch.setattr(search, "available_memory_bytes", lambda: int(0.9 * 10 * GIB))
    assert memory_reason(variant, cpu, 10 * GIB, recorded) is None
    assert "needs about 12.0 GiB" in memory_reason(variant, cpu, 10 * GIB, without)


def test_only_host_memory_is_checked(monkeypatch):
    load_builtin_backends()
    monkeypatch.setattr(search, "available_memory_bytes", lambda: 1)
    cpu = detect("cpu")
    variant = next(v for v in plan_candidates(cpu) if v.id == "openvino/fp32")
    assert "needs about" in memory_reason(variant, cpu, 10 * GIB)
    cuda = type(cpu)(kind="cuda", name="a GPU", cores=1)
    assert memory_reason(variant, cuda, 10 * GIB) is None


def test_the_search_skips_what_does_not_fit_and_goes_on(tiny_pipe, monkeypatch):
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    weights = fp32_weights_bytes(tiny_pipe.unet)
    # Room for OpenVINO bf16 (0.9 copies), not for fp32 (1.4) or ONNX Runtime fp32 (1.5).
    monkeypatch.setattr(search, "available_memory_bytes", lambda: int(1.2 * weights))
    out = sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=1.0,
                               backends=["openvino/fp32", "openvino/bf16", "onnxruntime/fp32"],
                               num_inference_steps=2, show=False, end_to_end=False,
                               exhaustive=True)
    rows = {c.id: c for c in out.sdopt_result.candidates}
    for skipped in ("openvino/fp32", "onnxruntime/fp32"):
        assert rows[skipped].status == "skipped"
        assert rows[skipped].reason.startswith("needs about ")
        assert "GiB is available" in rows[skipped].reason
    if detect("cpu").precision_unavailable_reason("bf16") is None:
        assert rows["openvino/bf16"].status in ("ok", "selected")
    assert out.sdopt_result.selected is not None


def test_token_merging_on_an_openvino_pick_is_skipped_when_its_graph_would_not_fit(
        tiny_pipe, tmp_path, monkeypatch):
    """Token merging on an OpenVINO pick converts the UNet again (#20; on SDXL each merged int8
    graph holds 2.6 GB of its own): the technique phase checks its measured need as the backend
    phase checks a build's, and tries it where the weights are shared (the eager original)."""
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    from sdopt.backends.torch_eager import reference_module
    from sdopt.optimize.search import (CandidateResult, OptimizationResult,
                                       host_memory_reason, run_technique_search)
    from sdopt.techniques import memory_copies, token_merge_openvino

    from ..techniques.test_step_cache_openvino import _build, _inputs

    cpu = detect("cpu")
    unet = tiny_pipe.unet
    pick = _build(unet, "int8-inner-minmax", _inputs(unet), tmp_path)
    original = reference_module(unet)
    weights = fp32_weights_bytes(unet)
    need = token_merge_openvino.MEMORY_COPIES["int8"] * weights
    spec = {"name": "token_merge", "ratio": 0.5}
    monkeypatch.setattr(search, "available_memory_bytes", lambda: int(1.1 * need))
    def reason(module, device=cpu):
        return host_memory_reason(memory_copies([spec], module), device, weights)

    assert reason(pick) is None
    monkeypatch.setattr(search, "available_memory_bytes", lambda: int(0.9 * need))
    assert reason(pick).startswith("needs about ")
    assert reason(original) is None, "shares the weights"
    assert reason(pick, type(cpu)(kind="cuda", name="a GPU", cores=1)) is None

    rows = [CandidateResult(i, i.split("/")[0], i.split("/")[1], p, [], "selected",
                            latency_s=1.0, metric_drop=0.0, e2e_latency_s=1.0)
            for i, p in (("torch_eager/fp32", "fp32"), ("openvino/int8-inner-minmax", "int8"))]
    result = OptimizationResult({}, "numeric_precision", 0.05, "unconstrained", {}, rows,
                                rows[0], rows[1])

    def evaluate(module, specs, row, alongside):
        raise RuntimeError("evaluated")

    run_technique_search(result, [(rows[0], original), (rows[1], pick)], cpu,
                         metric_drop_ths=0.05, image_metric="psnr", evaluate=evaluate,
                         weights_bytes=weights)
    merged = {c.id: c for c in result.candidates
              if [s["name"] for s in c.pipeline_techniques] == ["token_merge"]}
    on_pick = [c for i, c in merged.items() if i.startswith("openvino/")]
    on_original = [c for i, c in merged.items() if i.startswith("torch_eager/")]
    assert on_pick and on_original
    assert all(c.status == "skipped" and c.reason.startswith("needs about ") for c in on_pick)
    assert all(c.status == "failed" and c.reason.startswith("RuntimeError: evaluated")
               for c in on_original), on_original[0].reason
