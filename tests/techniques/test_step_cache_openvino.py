"""Step caching on the OpenVINO pick (#20): the compiled graph split into a full model (one more
output, the deep feature) and a shallow one (that feature as an input), cut from the backend's
own graph, quantized or not; a cached step gives what the eager step cache gives, and the
pipeline's images stay close to the original's."""

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends import load_builtin_backends
from sdopt.backends.base import BACKENDS, BuildContext, UNetInputs
from sdopt.backends.torch_eager import reference_module
from sdopt.device import detect
from sdopt.optimize.metrics import psnr_db
from sdopt.techniques import step_cache, unavailable_reason
from sdopt.techniques.step_cache_openvino import (DEEP_FEATURE, OpenVINOStepCacheModule,
                                                  is_unet_graph)

pytest.importorskip("openvino")

SPEC = {"name": "step_cache", "interval": 2}


@pytest.fixture(scope="module")
def tiny():
    return sdopt.build_preset("tiny")


def _inputs(unet, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return UNetInputs(torch.randn(2, 4, 32, 32, generator=gen), torch.tensor(900.0),
                      torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen), {})


def _build(denoiser, variant_name, example, tmp_path):
    load_builtin_backends()
    dev = detect("cpu")
    backend = BACKENDS["openvino"]
    variant = next(v for v in backend.variants(dev) if v.name == variant_name)
    if backend.unavailable_reason(dev, variant):
        pytest.skip(backend.unavailable_reason(dev, variant))
    ctx = BuildContext(device=dev, example=example, calibration=[example] * 4,
                       cache_dir=tmp_path / "cache")
    with torch.inference_mode():
        return backend.build(denoiser, variant, ctx).eval()


@pytest.fixture(scope="module")
def ov_fp32(tiny, tmp_path_factory):
    return _build(tiny.unet, "fp32", _inputs(tiny.unet), tmp_path_factory.mktemp("ov"))


def test_the_graph_splits_into_a_full_and_a_shallow_model(ov_fp32):
    assert is_unet_graph(ov_fp32.graph.model)
    cached = OpenVINOStepCacheModule(ov_fp32, 2)
    full_ops = cached.full.model.get_ordered_ops()
    shallow_ops = cached.shallow.model.get_ordered_ops()
    assert len(cached.full.model.outputs) == 2
    assert cached.shallow.names[-1] == DEEP_FEATURE
    assert len(shallow_ops) < 0.3 * len(full_ops)
    deep = [op.get_friendly_name() for op in shallow_ops
            if ".mid_block" in op.get_friendly_name() or ".down_blocks.1" in
            op.get_friendly_name() or ".up_blocks.0" in op.get_friendly_name()]
    assert not deep, deep[:5]
    # The backend's own model is left as it was.
    assert len(ov_fp32.graph.model.outputs) == 1


def test_a_full_step_is_the_backend_and_a_cached_step_is_the_eager_cache(tiny, ov_fp32):
    assert unavailable_reason(SPEC, ov_fp32, detect("cpu")) is None
    ov = step_cache.apply(ov_fp32, {"interval": 2}, tiny.unet)
    assert isinstance(ov, OpenVINOStepCacheModule)
    eager = step_cache.apply(reference_module(tiny.unet), {"interval": 2}, tiny.unet)
    x = _inputs(tiny.unet)
    with torch.inference_mode():
        assert torch.equal(ov(x.sample, x.timestep, x.encoder_hidden_states),
                           ov_fp32(x.sample, x.timestep, x.encoder_hidden_states))
        eager(x.sample, x.timestep, x.encoder_hidden_states)
        nxt = x.sample * 0.9
        a = ov(nxt, torch.tensor(880.0), x.encoder_hidden_states)
        b = eager(nxt, torch.tensor(880.0), x.encoder_hidden_states)
    assert ov.cached_calls == eager.cached_calls == 1 and ov.full_calls == 1
    assert (a - b).abs().max().item() < 1e-4 * b.abs().max().item() + 1e-5
    # A new generation (the timestep goes up) starts with a full step again.
    with torch.inference_mode():
        ov(x.sample, x.timestep, x.encoder_hidden_states)
    assert ov.full_calls == 2


def test_step_caching_stacks_on_the_int8_pick_and_its_images_stay_close(tiny, tmp_path):
    from sdopt.optimize.optimized import assemble

    from .test_techniques import _images

    calls = [_inputs(tiny.unet, seed) for seed in range(4)]
    module = _build(tiny.unet, "int8-inner", calls[0], tmp_path)
    pipe = assemble(tiny, module, [SPEC], detect("cpu"), info={"techniques": [SPEC]})
    plain = assemble(tiny, module, [], detect("cpu"), info={"techniques": []})
    cache = next(m for m in pipe.unet.modules() if isinstance(m, OpenVINOStepCacheModule))
    images, reference = _images(pipe), _images(plain)
    # Every other UNet call of each of the two images is cached, starting with a full one.
    calls = len(pipe.scheduler.timesteps)
    assert (cache.full_calls, cache.cached_calls) == (2 * (calls - calls // 2), 2 * (calls // 2))
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 25
    assert not all(np.array_equal(r, i) for r, i in zip(reference, images))


def test_a_dit_graph_is_split_at_its_transformer_blocks_not_as_a_unet(tmp_path):
    """A DiT's graph has no up blocks to cut at: step caching splits it at its transformer
    blocks instead (:mod:`sdopt.techniques.dit_cache_openvino`, tested there)."""
    from sdopt.optimize.capture import example_inputs
    from sdopt.techniques import step_cache_openvino, token_merge_openvino
    from sdopt.techniques.dit_cache_openvino import OpenVINODiTStepCacheModule

    pipe = sdopt.build_preset("sd3-tiny")
    module = _build(pipe.transformer, "fp32", example_inputs(pipe, 64, 64), tmp_path)
    assert not is_unet_graph(module.graph.model)
    assert "no up_blocks" in step_cache_openvino.incompatible_reason(module)
    assert "not a diffusers UNet" in token_merge_openvino.incompatible_reason(module)
    assert unavailable_reason(SPEC, module, detect("cpu")) is None
    assert isinstance(step_cache.apply(module, SPEC, pipe.transformer), OpenVINODiTStepCacheModule)
