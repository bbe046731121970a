"""What a CPU without bf16 units still runs: bf16 is skipped by the search for its speed, but a
candidate named explicitly or a model saved on a CPU with bf16 runs here, slower, with a warning
(GitHub's hosted runners include CPUs without bf16; a gate pinned to a bf16 candidate must not
turn into a bad-input error there)."""

import logging

import numpy as np

import sdopt
from sdopt.device import detect

from .conftest import cpu_described, image_array


def test_only_the_bf16_speed_reason_is_only_slow():
    cpu = cpu_described(bf16=False)
    reason = cpu.precision_unavailable_reason("bf16")
    assert reason and cpu.only_slow(reason)
    assert not cpu.only_slow(None) and not cpu.only_slow("TensorRT needs an NVIDIA GPU")
    assert cpu_described(bf16=True).precision_unavailable_reason("bf16") is None


def test_a_named_bf16_candidate_runs_on_a_cpu_without_bf16(fresh_tiny_pipe, monkeypatch, caplog,
                                                           tmp_path):
    from sdopt.optimize import api

    monkeypatch.setattr(api, "detect", lambda device=None: cpu_described(bf16=False))
    with caplog.at_level(logging.WARNING, logger=api.__name__):
        optimized = sdopt.apply_variant(fresh_tiny_pipe, "torch_eager/bf16")
    assert "candidate 'torch_eager/bf16' runs here, but slower than fp32" in caplog.text
    image = image_array(optimized)
    sdopt.save_model(optimized, tmp_path / "m")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=api.__name__):
        loaded = sdopt.load_model(tmp_path / "m", pipe=sdopt.build_preset("tiny"))
    assert "(torch_eager/bf16) runs here, but slower than fp32" in caplog.text
    assert np.abs(image_array(loaded) - image).max() <= 1


def test_a_search_runs_a_bf16_variant_named_one_by_one(fresh_tiny_pipe, monkeypatch):
    """On a CPU without bf16 units the search skips bf16 for its speed, unless the user named
    the variant itself (#17: every candidate reachable by explicit request); naming only its
    backend does not."""
    from sdopt.optimize import request

    monkeypatch.setattr(request, "detect", lambda device=None: cpu_described(bf16=False))
    why = cpu_described(bf16=False).precision_unavailable_reason("bf16")
    kwargs = dict(metric_drop_ths=0.2, num_inference_steps=2, repeats=1, show=False,
                  end_to_end=False, reuse_search=False)
    rows = {c.id: c for c in sdopt.optimize_model(
        fresh_tiny_pipe, ["a cat"], backends=["torch_eager/bf16"], **kwargs
    ).sdopt_result.candidates}
    named = rows["torch_eager/bf16"]
    assert named.status in ("ok", "selected") and named.latency_s, (named.status, named.reason)
    assert named.reason == f"named in backends, so run though it is slow here: {why}"
    rows = {c.id: c for c in sdopt.optimize_model(
        fresh_tiny_pipe, ["a cat"], backends=["torch_eager"], **kwargs
    ).sdopt_result.candidates}
    assert rows["torch_eager/bf16"].status == "skipped" and rows["torch_eager/bf16"].reason == why


def test_bf16_on_a_gpu_needs_its_tensor_cores():
    """GitHub's hosted GPU runner is a T4 (7.5): torch.cuda.is_bf16_supported() says True there
    (emulated), but Triton cannot emit bf16 below 8.0, so the search must not try it."""
    import dataclasses

    def gpu(name, capability):
        return dataclasses.replace(detect("cpu"), kind="cuda", name=name,
                                   cuda_capability=capability)

    t4 = gpu("Tesla T4", "7.5")
    reason = t4.precision_unavailable_reason("bf16")
    assert reason and "Tesla T4 (compute capability 7.5) has no bf16 tensor cores" in reason
    assert not t4.only_slow(reason)  # refused, not just slow: Inductor would not compile it
    assert t4.precision_unavailable_reason("fp16") is None
    assert gpu("NVIDIA V100", "7.0").precision_unavailable_reason("bf16")
    assert gpu("an unknown GPU", None).precision_unavailable_reason("bf16")
    for name, capability in (("NVIDIA A100", "8.0"), ("NVIDIA L4", "8.9"),
                             ("NVIDIA H200", "9.0")):
        assert gpu(name, capability).precision_unavailable_reason("bf16") is None


def test_a_search_on_a_t4_skips_the_bf16_settings_with_the_reason():
    import dataclasses

    from sdopt.backends.base import get_backend
    from sdopt.optimize.search import plan_candidates

    t4 = dataclasses.replace(detect("cpu"), kind="cuda", name="Tesla T4", cuda_capability="7.5")
    bf16 = [v for v in plan_candidates(t4, backends=["torch_eager", "torch_compile"])
            if v.precision == "bf16"]
    assert {v.id for v in bf16} >= {"torch_compile/bf16", "torch_eager/bf16"}
    for variant in bf16:
        reason = get_backend(variant.backend).unavailable_reason(t4, variant)
        assert reason, variant.id  # (torch_compile's may name missing triton first, on a CPU box)
        if "triton" not in reason:
            assert "no bf16 tensor cores" in reason, (variant.id, reason)
