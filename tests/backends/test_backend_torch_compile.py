"""torch.compile's CUDA recipes (#16), checked here on CPU where the parts are device-independent:
the recipe's fused QKV and channels_last compile as one graph (fullgraph) and give the eager
UNet's output; a saved model keeps only the unfused weights and is fused again on load; the
search accepts a single variant by id and bounds a CUDA-graph variant by its eager counterpart.
CUDA graphs themselves are checked in tests/test_cuda.py on a GPU."""

import dataclasses

import pytest
import torch

from sdopt.backends.base import BACKENDS, Variant, UNetInputs
from sdopt.backends.torch_compile import CUDA_MODES, CompiledModule, TorchCompile, inductor_options
from sdopt.device import detect
from sdopt.errors import SdoptError
from sdopt.optimize.ordering import MAX_CUDAGRAPH_GAIN, eager_counterpart
from sdopt.optimize.search import plan_candidates


def _cuda_like():
    """A device description of kind cuda: variants and options depend on the kind only."""
    return dataclasses.replace(detect("cpu"), kind="cuda", name="a CUDA GPU")


def test_cuda_lists_the_recipe_and_cuda_graph_variants():
    variants = {v.name: v for v in TorchCompile().variants(_cuda_like())}
    assert {"fp32", "bf16", "fp16", "fp16-cudagraphs", "fp16-max-autotune"} <= set(variants)
    recipe = variants["fp16-max-autotune"].options
    assert recipe["channels_last"] and recipe["fuse_qkv"] and recipe["fullgraph"]
    options = inductor_options("cuda", recipe["mode"])
    # diffusers' recipe flags, max-autotune and CUDA graphs
    assert options["max_autotune"] and options["triton.cudagraphs"]
    assert options["conv_1x1_as_mm"] and options["epilogue_fusion"] is False
    assert inductor_options("cuda", "cudagraphs") == {"triton.cudagraphs": True}
    assert inductor_options("cpu", "") == {"freezing": True}
    # every option is a real inductor config key of the installed torch
    import torch._inductor.config as config
    for mode in CUDA_MODES.values():
        for key in mode:
            obj = config
            for part in key.split("."):
                obj = getattr(obj, part)
    # CPU has none of them
    assert {v.name for v in TorchCompile().variants(detect("cpu"))} == {"fp32", "bf16"}


def test_backends_accepts_single_variants_by_id():
    dev = _cuda_like()
    ids = [v.id for v in plan_candidates(dev, backends=["torch_compile/fp16-cudagraphs",
                                                        "inductor/fp16", "torch_eager"])]
    assert "torch_compile/fp16-cudagraphs" in ids and "torch_compile/fp16" in ids
    assert "torch_compile/fp16-max-autotune" not in ids and "torch_compile/fp32" not in ids
    assert "torch_eager/fp16-channels_last" in ids
    with pytest.raises(SdoptError, match=r"backends: 'torch_compile/fp8' is not a variant of "
                                         r"torch_compile on cuda \(it has: .*fp16-cudagraphs"):
        plan_candidates(dev, backends=["torch_compile/fp8"])
    with pytest.raises(SdoptError, match="backends"):
        plan_candidates(dev, backends=["nope/fp16"])


def test_cuda_graph_variant_is_bounded_by_its_eager_counterpart():
    variants = {v.name: v for v in TorchCompile().variants(_cuda_like())}
    assert eager_counterpart(variants["fp16-max-autotune"], "cuda") == \
        ("torch_eager/fp16-channels_last", MAX_CUDAGRAPH_GAIN)
    assert eager_counterpart(variants["fp16"], "cuda") == ("torch_eager/fp16", 2.0)


def test_compile_gain_bound_is_tighter_on_cpu():
    """On CPU torch.compile never beat eager by 1.3x in this project's measurements: the bound is
    1.5x there, 2x on CUDA (stable-fast's 1.2x)."""
    variants = {v.name: v for v in TorchCompile().variants(detect("cpu"))}
    assert eager_counterpart(variants["bf16"], "cpu") == ("torch_eager/bf16", 1.5)
    assert eager_counterpart(variants["bf16"], "cuda")[1] == 2.0


@pytest.mark.slow
def test_fused_qkv_channels_last_fullgraph_matches_eager_and_round_trips(tiny_pipe, tmp_path):
    """The recipe's graph changes (fused projections, NHWC) compiled as one graph on CPU."""
    dev = detect("cpu")
    backend = BACKENDS["torch_compile"]
    variant = Variant("torch_compile", "fp32-recipe", "fp32",
                      options={"channels_last": True, "fuse_qkv": True, "fullgraph": True,
                               "mode": ""})
    unet = tiny_pipe.unet
    gen = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = UNetInputs(torch.randn(2, 4, size, size, generator=gen), torch.tensor(10),
                   torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen))
    ctx = dataclasses.make_dataclass("Ctx", ["device"])(dev)
    module = backend.build(unet, variant, ctx)
    assert isinstance(module, CompiledModule)
    assert any(name.endswith("to_qkv") for name, _ in module.unet.named_modules())
    assert not any(name.endswith("to_qkv") for name, _ in unet.named_modules())  # original kept
    with torch.inference_mode():
        want = unet(x.sample, x.timestep, x.encoder_hidden_states).sample
        got = module(x.sample, x.timestep, x.encoder_hidden_states)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-3), (got - want).abs().max()
    info = backend.save(module, tmp_path)
    from safetensors import safe_open
    with safe_open(str(tmp_path / info["weights"]), "pt") as saved:
        keys = list(saved.keys())
    assert keys and not any(".to_qkv." in k for k in keys)  # the originals only
    loaded = backend.load(tmp_path, unet, variant, info, dev)
    with torch.inference_mode():
        again = loaded(x.sample, x.timestep, x.encoder_hidden_states)
    assert torch.allclose(again, got, atol=1e-5)


def test_a_compile_longer_than_the_budget_left_is_skipped_with_the_reason(monkeypatch):
    from sdopt.optimize.search import skip_reason

    dev = _cuda_like()
    # as on a GPU machine, where triton is installed
    monkeypatch.setattr(TorchCompile, "unavailable_reason", lambda self, device, variant: None)
    variants = {v.name: v for v in TorchCompile().variants(dev)}
    reason = skip_reason(variants["fp16-max-autotune"], dev, [], lossless_only=False,
                         time_budget_s=600, spent_s=100)
    assert reason and "about 600 s cold" in reason and "500 s left of 600 s" in reason
    assert skip_reason(variants["fp16-max-autotune"], dev, [], lossless_only=False,
                       time_budget_s=None, spent_s=100) is None  # exhaustive: no budget
    assert skip_reason(variants["fp16-cudagraphs"], dev, [], lossless_only=False,
                       time_budget_s=600, spent_s=100) is None
