"""Step caching on a UNet compiled by torch.compile (#16: CUDA's pick is a compiled graph): the
UNet compiled again as DeepCache's full path (returning the deep feature) and shallow path, with
the pick's own inductor options, over its weights. Here on CPU (inductor with freezing) in fp32:
a full step is the pick's output, a cached step is the eager step cache's, the pick's own graph
is untouched, and a compiled DiT or a wrapped pick is refused with the reason. On a GPU the same
module runs with CUDA graphs (tests/test_cuda.py)."""

import shutil

import pytest
import torch

import sdopt
from sdopt.backends import load_builtin_backends
from sdopt.backends.base import BACKENDS, BuildContext, UNetInputs
from sdopt.backends.torch_eager import reference_module
from sdopt.device import detect
from sdopt.techniques import step_cache, unavailable_reason
from sdopt.techniques.step_cache_compiled import CompiledStepCacheModule

pytestmark = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                reason="inductor on CPU needs a C++ compiler (g++)")

SPEC = {"name": "step_cache", "interval": 2}


def _inputs(unet, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return UNetInputs(torch.randn(2, 4, 16, 16, generator=gen), torch.tensor(900.0),
                      torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen), {})


def _compiled(denoiser, example):
    load_builtin_backends()
    dev = detect("cpu")
    backend = BACKENDS["torch_compile"]
    variant = next(v for v in backend.variants(dev) if v.name == "fp32")
    with torch.inference_mode():
        module = backend.build(denoiser, variant, BuildContext(device=dev, example=example))
        module(example.sample, example.timestep, example.encoder_hidden_states)
    return module.eval()


@pytest.fixture(scope="module")
def tiny():
    return sdopt.build_preset("tiny")


def test_a_full_step_is_the_pick_and_a_cached_step_is_the_eager_cache(tiny):
    x = _inputs(tiny.unet)
    pick = _compiled(tiny.unet, x)
    assert unavailable_reason(SPEC, pick, detect("cpu")) is None
    cached = step_cache.apply(pick, {"interval": 2}, tiny.unet)
    assert isinstance(cached, CompiledStepCacheModule)
    eager = step_cache.apply(reference_module(tiny.unet), {"interval": 2}, tiny.unet)
    nxt, t2 = x.sample * 0.9, torch.tensor(880.0)
    with torch.inference_mode():
        before = pick(x.sample, x.timestep, x.encoder_hidden_states)
        full = cached(x.sample, x.timestep, x.encoder_hidden_states)
        eager(x.sample, x.timestep, x.encoder_hidden_states)
        a = cached(nxt, t2, x.encoder_hidden_states)
        b = eager(nxt, t2, x.encoder_hidden_states)
        after = pick(x.sample, x.timestep, x.encoder_hidden_states)
        whole = pick(nxt, t2, x.encoder_hidden_states)
    tol = 1e-4 * before.abs().max().item() + 1e-5
    assert (full - before).abs().max().item() < tol
    assert cached.full_calls == 1 and cached.cached_calls == eager.cached_calls == 1
    assert (a - b).abs().max().item() < tol, "the compiled shallow path is the eager one"
    assert (a - whole).abs().max().item() > 10 * tol, "a cached step is not a full one"
    assert torch.equal(before, after), "the pick's own graph is left as it was"
    with torch.inference_mode():  # a new generation starts with a full step again
        cached(x.sample, x.timestep, x.encoder_hidden_states)
    assert cached.full_calls == 2


def test_a_wrapped_pick_or_a_compiled_dit_is_refused_with_the_reason(tiny):
    from sdopt.optimize.capture import example_inputs
    from sdopt.techniques import step_cache_compiled

    dit = sdopt.build_preset("sd3-tiny")
    load_builtin_backends()
    dev = detect("cpu")
    backend = BACKENDS["torch_compile"]
    variant = next(v for v in backend.variants(dev) if v.name == "fp32")
    ctx = BuildContext(device=dev, example=example_inputs(dit, 64, 64))
    module = backend.build(dit.transformer, variant, ctx)  # not called: nothing compiles
    why = step_cache_compiled.incompatible_reason(module)
    assert "compiled DiT is not implemented" in why
    assert unavailable_reason(SPEC, module, dev) == why
    unet_pick = backend.build(tiny.unet, variant, BuildContext(device=dev,
                                                               example=_inputs(tiny.unet)))
    wrapper = CompiledStepCacheModule(unet_pick, 2)
    assert "wrapped by another technique" in step_cache_compiled.incompatible_reason(wrapper)
