"""Step caching (FORA) on a DiT compiled by OpenVINO (#20, #18): the SD3, Flux and PixArt graphs
split into a full model (one more output, the transformer blocks' total contribution to the image
stream) and a shallow one (that contribution as an input, the blocks dropped), cut from the
backend's own graph, quantized or not; a full step is the backend's, a cached step is the eager
DiT cache's, and the pipelines make images with every other step cached."""

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends.torch_eager import reference_module
from sdopt.device import detect
from sdopt.models import denoiser_of, pipeline_inputs
from sdopt.optimize.capture import example_inputs
from sdopt.optimize.metrics import psnr_db
from sdopt.optimize.optimized import assemble
from sdopt.techniques import step_cache, unavailable_reason
from sdopt.techniques.dit_cache import DiTStepCacheModule
from sdopt.techniques.dit_cache_openvino import _BLOCK, CONTRIBUTION, OpenVINODiTStepCacheModule

from .test_step_cache_openvino import _build

pytest.importorskip("openvino")

SPEC = {"name": "step_cache", "interval": 2}
DEVICE = detect("cpu")
SIDE = 64  # the pipelines' size here, and the shapes the graphs are converted at
STEPS = 6


@pytest.fixture(scope="module", params=["sd3-tiny", "flux-tiny", "pixart-tiny"])
def dit(request, tmp_path_factory):
    pipe = sdopt.build_preset(request.param)
    example = example_inputs(pipe, SIDE, SIDE)
    module = _build(denoiser_of(pipe), "fp32", example, tmp_path_factory.mktemp("ov"))
    return request.param, pipe, example, module


def _images(pipe, seeds=(0, 1), **kw):
    return [np.asarray(pipe("a photo of a cat", **pipeline_inputs(pipe, SIDE, SIDE),
                            num_inference_steps=STEPS,
                            generator=torch.Generator().manual_seed(seed), **kw).images[0])
            for seed in seeds]


def test_the_dit_graph_splits_into_a_full_and_a_shallow_model(dit):
    name, _, _, module = dit
    assert unavailable_reason(SPEC, module, DEVICE) is None
    cached = step_cache.apply(module, SPEC, None)
    assert isinstance(cached, OpenVINODiTStepCacheModule)
    full_ops = cached.full.model.get_ordered_ops()
    shallow_ops = cached.shallow.model.get_ordered_ops()
    assert len(cached.full.model.outputs) == 2
    assert len(full_ops) == len(module.graph.model.get_ordered_ops()) + 2  # Subtract, Result
    assert cached.shallow.names[-1] == CONTRIBUTION
    assert len(shallow_ops) < 0.4 * len(full_ops), name
    # No attention, no MLP of any block is left: at most a shape computation the converter
    # named after a block (SD3's norm_out shares its chunk sizes with the last block's).
    left = [op for op in shallow_ops if _BLOCK.search(op.get_friendly_name())]
    assert not [op.get_friendly_name() for op in left
                if ".attn" in op.get_friendly_name() or ".ff" in op.get_friendly_name()
                or op.get_type_name() == "ScaledDotProductAttention"]
    assert len(left) < 15, [op.get_friendly_name() for op in left]
    # The backend's own model is left as it was.
    assert len(module.graph.model.outputs) == 1


def test_a_full_step_is_the_backend_and_a_cached_step_is_the_eager_cache(dit):
    name, pipe, x, module = dit
    ov = step_cache.apply(module, SPEC, denoiser_of(pipe))
    eager = step_cache.apply(reference_module(denoiser_of(pipe)), SPEC, denoiser_of(pipe))
    assert isinstance(eager, DiTStepCacheModule)
    t0 = x.timestep
    with torch.inference_mode():
        assert torch.equal(ov(x.sample, t0, x.encoder_hidden_states, **x.extra),
                           module(x.sample, t0, x.encoder_hidden_states, **x.extra))
        eager(x.sample, t0, x.encoder_hidden_states, **x.extra)
        nxt, t1 = x.sample * 0.9 + 0.05, t0 * 0.97
        a = ov(nxt, t1, x.encoder_hidden_states, **x.extra)
        b = eager(nxt, t1, x.encoder_hidden_states, **x.extra)
        plain = module(nxt, t1, x.encoder_hidden_states, **x.extra)
    assert (ov.full_calls, ov.cached_calls) == (eager.full_calls, eager.cached_calls) == (1, 1)
    assert eager.blocks_reused > 0
    assert (a - b).abs().max().item() < 1e-4 * b.abs().max().item() + 1e-5, name
    assert not torch.equal(a, plain)  # the cached step is not a full one
    # A new generation (the timestep goes up) starts with a full step again.
    with torch.inference_mode():
        ov(x.sample, t0, x.encoder_hidden_states, **x.extra)
    assert ov.full_calls == 2


def test_the_pipeline_caches_every_other_step(dit):
    name, pipe, _, module = dit
    reference = _images(assemble(pipe, module, [], DEVICE))
    cached_pipe = assemble(pipe, module, [SPEC], DEVICE)
    cache = denoiser_of(cached_pipe).module
    assert isinstance(cache, OpenVINODiTStepCacheModule)
    images = _images(cached_pipe)
    calls = cache.full_calls + cache.cached_calls
    assert calls == 2 * STEPS  # two images, one call per step (batched CFG or none)
    assert (cache.full_calls, cache.cached_calls) == (2 * (STEPS - STEPS // 2), 2 * (STEPS // 2))
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 25, name
    assert not all(np.array_equal(r, i) for r, i in zip(reference, images))


@pytest.mark.parametrize("dit", ["flux-tiny"], indirect=True)  # the one that calls it twice
def test_each_pass_of_a_step_keeps_its_own_contribution(dit):
    """Flux's true CFG calls the transformer twice per step: as the eager DiT cache does, a cached
    step reuses each pass's own contribution."""
    name, pipe, _, module = dit
    kw = {"negative_prompt": "a blurry photo", "true_cfg_scale": 4.0}
    reference = _images(assemble(pipe, module, [], DEVICE), seeds=(0,), **kw)
    cached_pipe = assemble(pipe, module, [SPEC], DEVICE)
    cache = denoiser_of(cached_pipe).module
    got = _images(cached_pipe, seeds=(0,), **kw)
    assert (cache.full_calls, cache.cached_calls) == (STEPS, STEPS)  # 2 passes x 3 + 2 x 3
    assert sorted(cache._per_pass) == [0, 1]
    assert psnr_db(reference[0], got[0]) > 25


def test_step_caching_stacks_on_an_int8_dit(tmp_path):
    pipe = sdopt.build_preset("sd3-tiny")
    example = example_inputs(pipe, SIDE, SIDE)
    module = _build(denoiser_of(pipe), "int8-inner", example, tmp_path)
    assert unavailable_reason(SPEC, module, DEVICE) is None
    plain = _images(assemble(pipe, module, [], DEVICE))
    cached_pipe = assemble(pipe, module, [SPEC], DEVICE)
    cache = denoiser_of(cached_pipe).module
    assert isinstance(cache, OpenVINODiTStepCacheModule)
    x = example
    with torch.inference_mode():
        fresh = step_cache.apply(module, SPEC, denoiser_of(pipe))
        a = fresh(x.sample, x.timestep, x.encoder_hidden_states, **x.extra)
        b = module(x.sample, x.timestep, x.encoder_hidden_states, **x.extra)
    # A full step is the int8 backend's own graph; under the bf16 hint (what int8 compiles with
    # where the CPU has bf16) the extra output moves where the plugin rounds to bf16, so it is
    # equal to bf16's precision only (fp32: exactly equal, above).
    if module.hint == "f32":
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().max().item() < 2e-2 * b.abs().max().item()
    images = _images(cached_pipe)
    assert (cache.full_calls, cache.cached_calls) == (2 * (STEPS - STEPS // 2), 2 * (STEPS // 2))
    assert min(psnr_db(r, i) for r, i in zip(plain, images)) > 25


def test_a_graph_without_the_anchors_says_why(dit):
    """A graph whose output layer or first block cannot be found by name is skipped with the
    reason, never split at a guess."""
    from types import SimpleNamespace

    from sdopt.techniques import dit_cache_openvino
    from sdopt.techniques.dit_cache_openvino import ROOT

    _, _, _, module = dit
    for prefix in (f"{ROOT}.norm_out", f"{ROOT}.transformer_blocks.0.norm1"):
        model = module.graph.model.clone()
        for op in model.get_ops():
            name = op.get_friendly_name()
            if op.get_type_name() == "MVN" and name.startswith(prefix) and \
                    name[len(prefix)] in "./" and not name.startswith(prefix + "_"):
                op.set_friendly_name(name.replace(prefix, f"{ROOT}.renamed"))
        fake = SimpleNamespace(graph=SimpleNamespace(model=model), variant=module.variant)
        why = dit_cache_openvino.incompatible_reason(fake)
        assert why and "cannot split" in why and "0 layer norms" in why, why


@pytest.mark.parametrize("dit", ["pixart-tiny"], indirect=True)  # saving is family-independent
def test_a_saved_openvino_dit_with_step_caching_loads_with_it(dit, tmp_path):
    name, pipe, _, module = dit
    specs = [SPEC]
    optimized = assemble(pipe, module, specs, DEVICE,
                         info={"variant": module.variant.id, "build": module.build_info,
                               "techniques": specs})
    first = _images(optimized, seeds=(3,))
    sdopt.save_model(optimized, tmp_path / "saved")
    loaded = sdopt.load_model(tmp_path / "saved", pipe=sdopt.build_preset(name))
    cache = denoiser_of(loaded).module
    assert isinstance(cache, OpenVINODiTStepCacheModule)
    assert np.array_equal(_images(loaded, seeds=(3,))[0], first[0])
    assert cache.cached_calls == STEPS // 2


@pytest.mark.slow
def test_the_unconstrained_search_tries_step_caching_on_the_openvino_dit():
    pipe = sdopt.build_preset("sd3-tiny")
    optimized = sdopt.optimize_model(
        pipe, ["a photo of a cat"], metric_drop_ths=0.5, optimization_time="unconstrained",
        backends=["openvino"], ignore_compressors=["bf16", "fp16", "int8"],
        num_inference_steps=6, repeats=1, show=False, reuse_search=False, image_metric="psnr")
    rows = {r.id: r for r in optimized.sdopt_result.candidates}
    cached = [r for k, r in rows.items() if k.startswith("openvino/fp32+step_cache")]
    assert cached and all(r.status in ("ok", "selected") for r in cached), \
        {k: (r.status, r.reason) for k, r in rows.items()}
    assert not [k for k, r in rows.items() if r.status == "failed"]
