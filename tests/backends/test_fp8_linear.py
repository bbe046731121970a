"""fp8 linear layers (#16): the e4m3 layer against the bf16 one it replaces, which layers change,
the saved e4m3 weights round-tripping into a fresh copy, and where the variant is offered. Here
on CPU, where torch 2.13 runs ``torch._scaled_mm`` with rowwise scales too; on a GPU
tests/test_cuda.py runs the variant compiled with CUDA graphs through the search."""

import copy
import dataclasses

import pytest
import torch

from sdopt.backends.fp8_linear import FP8, Fp8Linear, eligible, to_fp8_linears
from sdopt.backends.torch_compile import TorchCompile, _clone, run_dtype
from sdopt.backends.torch_module import save_weights
from sdopt.device import detect

try:
    torch._scaled_mm(torch.zeros(16, 16, dtype=FP8), torch.zeros(16, 16, dtype=FP8).t(),
                     scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16),
                     out_dtype=torch.bfloat16)
    CPU_SCALED_MM = None
except (RuntimeError, NotImplementedError) as exc:  # an older torch: CUDA only
    CPU_SCALED_MM = f"torch._scaled_mm does not run on CPU in this torch: {exc}"
needs_scaled_mm = pytest.mark.skipif(CPU_SCALED_MM is not None, reason=str(CPU_SCALED_MM))


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _variant(device):
    return next(v for v in TorchCompile().variants(device) if v.name == "fp8-cudagraphs")


def _cuda(capability: str):
    return dataclasses.replace(detect("cpu"), kind="cuda", name="a CUDA GPU",
                               cuda_capability=capability)


@needs_scaled_mm
def test_an_fp8_layer_computes_the_linear_layer_within_e4m3_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).to(torch.bfloat16)
    layer = Fp8Linear.from_linear(linear)
    assert layer.weight.dtype == FP8 and layer.weight_scale.shape == (1, 96)
    assert (layer.in_features, layer.out_features) == (64, 96)
    x = torch.randn(2, 10, 64, dtype=torch.bfloat16)
    x[0, 3] *= 50  # one token with large activations: rowwise scales keep it from the others
    with torch.no_grad():
        expected, got = linear(x), layer(x)
    assert got.shape == expected.shape and got.dtype == torch.bfloat16
    assert _rel(got, expected) < 0.06
    assert _rel(got[1], expected[1]) < 0.06, "the other tokens keep their own scale"


def test_only_the_transformer_blocks_aligned_linear_layers_change(tiny_pipe):
    unet = copy.deepcopy(tiny_pipe.unet).to(torch.bfloat16)
    expected = {n for n, m in unet.named_modules() if eligible(n, m)}
    others = {n for n, m in unet.named_modules()
              if isinstance(m, torch.nn.Linear) and n not in expected}
    assert expected and all("transformer_blocks." in n for n in expected)
    assert any("time_embedding" in n for n in others), "embeddings stay in bf16"
    assert to_fp8_linears(unet) == len(expected)
    kinds = dict(unet.named_modules())
    assert all(isinstance(kinds[n], Fp8Linear) for n in expected)
    assert all(type(kinds[n]) is torch.nn.Linear for n in others)
    assert unet.dtype == torch.bfloat16, "what the pipeline reads stays the module's dtype"


@needs_scaled_mm
def test_saved_e4m3_weights_load_into_a_fresh_copy_with_the_same_output(tiny_pipe, tmp_path):
    from safetensors import safe_open

    variant = _variant(_cuda("9.0"))
    cpu = detect("cpu")
    assert run_dtype(variant) == torch.bfloat16
    built = _clone(tiny_pipe.unet, variant, cpu)
    save_weights(built, tmp_path)
    with safe_open(str(tmp_path / "unet.safetensors"), "pt") as f:
        fp8 = [k for k in f.keys() if f.get_slice(k).get_dtype() == "F8_E4M3"]
    assert fp8 and all(k.endswith(".weight") and "transformer_blocks." in k for k in fp8)
    loaded = _clone(copy.deepcopy(tiny_pipe.unet), variant, cpu, tmp_path)
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    hidden = torch.randn(2, 77, tiny_pipe.text_encoder.config.hidden_size, dtype=torch.bfloat16)
    t = torch.tensor([500])
    with torch.no_grad():
        out = built(sample, t, encoder_hidden_states=hidden).sample
        again = loaded(sample, t, encoder_hidden_states=hidden).sample
        reference = copy.deepcopy(tiny_pipe.unet).to(torch.bfloat16)(
            sample, t, encoder_hidden_states=hidden).sample
    assert torch.equal(out, again)
    assert _rel(out, reference) < 0.1


def test_offered_on_cuda_and_refused_with_the_reason_below_ada(monkeypatch):
    from sdopt import deps

    monkeypatch.setattr(deps, "unavailable_reason", lambda *a, **k: None)  # triton: a GPU's
    cpu = detect("cpu")
    assert "fp8-cudagraphs" not in {v.name for v in TorchCompile().variants(cpu)}
    hopper, ampere = _cuda("9.0"), _cuda("8.0")
    variant = _variant(hopper)
    assert variant.precision == "fp8" and not variant.options.get("fuse_qkv")
    assert hopper.precision_unavailable_reason("fp8") is None
    assert _cuda("8.9").precision_unavailable_reason("fp8") is None
    why = TorchCompile().unavailable_reason(ampere, variant)
    assert why == ampere.precision_unavailable_reason("fp8")
    assert "compute capability 8.9 or newer" in why and "8.0" in why
    assert "the device is cpu" in cpu.precision_unavailable_reason("fp8")
