"""How OpenVINO's CPU plugin runs the UNet's attention, per openvino variant, on the tiny preset.

What is true (OpenVINO 2026.4, checked here): the converted IR has one ScaledDotProductAttention
op per attention; the CPU plugin keeps its own SDPA kernel for LLMs (SDPA fed by a KV cache) and
decomposes every other SDPA while compiling, and its Snippets MHA tokenizer fuses the decomposed
attention back into one ``Subgraph`` node (a generated brgemm kernel). So the runtime graph has no
SDPA node, no MatMul and no Softmax node: exactly one fused Subgraph per SDPA op of the IR, in
every variant. NNCF's int8 (FakeQuantize on Q and K) keeps that fusion and runs it in i8 on a
CPU with VNNI; without it (a Zen 3) int8 attention stays decomposed.
``SNIPPETS_MODE=DISABLE`` shows the decomposed form (two MatMul and one Softmax per attention):
the test of the counter fails when fusion is off.

The tokenizer skips an attention whose batch x heads (2 x 8 here) is below the thread count and
whose rows cannot be split per thread; the compile pins 2 threads so that a many-core runner
checks the same graph as this 2-core machine.
"""

import pytest

from ..conftest import build_variant

pytest.importorskip("openvino", reason="the openvino package is not installed")

from sdopt.backends import get_backend  # noqa: E402
from sdopt.backends.openvino_ops import module_attention_report  # noqa: E402
from sdopt.device import detect  # noqa: E402

THREADS = {"INFERENCE_NUM_THREADS": 2}
VARIANTS = [v.name for v in get_backend("openvino").variants(detect("cpu"))]
# What the bf16 hint runs in: bf16 where the CPU has bf16 units, else OpenVINO runs f32
FLOAT = "bf16" if detect("cpu").supports_bf16()[0] else "f32"
# int8 variants: i8 (QK^T quantized); int8-weights compresses weights only and int8-conv-minmax
# and int8-conv-nncf (CPUs without VNNI) leave attention out of int8: attention in float, fused
RUNTIME_PRECISION = {"fp32": "f32", "bf16": FLOAT, "int8-weights": FLOAT,
                     "int8-conv-minmax": FLOAT, "int8-conv-nncf": FLOAT}
# The Snippets tokenizer fuses an int8 attention only on a CPU with VNNI (seen fused on Zen 4's
# avx512_vnni; on a Zen 3, AVX2 alone, it stays decomposed: QK^T an i8 MatMul, softmax and the
# product with V in f32).
INT8_FUSES = detect("cpu").has_vnni()


@pytest.fixture(scope="module")
def modules(tiny_pipe, samples):
    return {}


def _report(tiny_pipe, samples, modules, name, config=None):
    if name not in modules:
        modules[name] = build_variant(tiny_pipe, "openvino", name, samples)
    return module_attention_report(modules[name], samples.verification[0].inputs,
                                   {**THREADS, **(config or {})})


def test_variants_cover_the_four_named_ones():
    assert {"fp32", "bf16", "int8", "int8-inner"} <= set(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_sdpa_runs_as_one_fused_subgraph(tiny_pipe, samples, modules, name):
    if name == "bf16" and FLOAT != "bf16":
        pytest.skip("this CPU has no bf16 units: OpenVINO's bf16 hint runs attention "
                    "decomposed here (the search skips the bf16 variant on such CPUs)")
    report = _report(tiny_pipe, samples, modules, name)
    n = report["ir"]["ScaledDotProductAttention"]
    assert n == 12, "the tiny UNet: 6 transformer blocks, self- and cross-attention"
    assert report["ir"]["Softmax"] == 0, "convert_model gave SDPA ops, no decomposed softmax"
    assert report["attention"]["ir_sdpa"] == n
    if name not in RUNTIME_PRECISION and not INT8_FUSES:
        assert report["attention"]["execution"] == {"sdpa": 0, "fused_subgraph": 0,
                                                    "decomposed": n, "unmapped": 0}
        assert report["runtime_precisions"]["MatMul:i8"] == n, "QK^T still in int8"
        return
    assert report["attention"]["execution"] == {"sdpa": 0, "fused_subgraph": n,
                                                "decomposed": 0, "unmapped": 0}
    # no decomposed attention anywhere in the runtime graph (the tiny UNet's other matmuls are
    # Linear layers: FullyConnected)
    assert report["runtime"]["MatMul"] == 0 and report["runtime"]["Softmax"] == 0
    assert report["runtime"]["ScaledDotProductAttention"] == 0, "the LLM-only kernel"
    precision = RUNTIME_PRECISION.get(name, "i8")
    assert report["attention"]["nodes"] == {f"Subgraph:{precision}": n}


@pytest.mark.parametrize("name", ["int8", "int8-inner"])
def test_int8_quantizes_q_and_k_and_keeps_the_fusion(tiny_pipe, samples, modules, name):
    report = _report(tiny_pipe, samples, modules, name)
    n = report["ir"]["ScaledDotProductAttention"]
    assert report["ir"]["FakeQuantize"] > 0
    # NNCF's SDPA scope override: symmetric int8 on the Q and K inputs, V left in float
    assert report["ir_sdpa_inputs_quantized"] == {"q": n, "k": n, "v": 0}
    assert report["attention"]["execution"]["fused_subgraph" if INT8_FUSES else "decomposed"] == n


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_the_counter_sees_decomposed_attention(tiny_pipe, samples, modules, name):
    report = _report(tiny_pipe, samples, modules, name, {"SNIPPETS_MODE": "DISABLE"})
    n = report["ir"]["ScaledDotProductAttention"]
    assert report["attention"]["execution"]["decomposed"] == n
    assert report["attention"]["execution"]["fused_subgraph"] == 0
    assert report["runtime"]["Softmax"] == n and report["runtime"]["MatMul"] == 2 * n
    if name == "int8":  # QK^T in int8, softmax(QK^T) V in bf16
        assert report["runtime_precisions"]["MatMul:i8"] == n


def test_int8_with_sdpa_ignored_runs_attention_in_bf16(tiny_pipe, samples):
    """The benchmark's --int8-sdpa-float row: NNCF's IgnoredScope(types=[SDPA]) leaves Q and K
    unquantized, and the fused Subgraph runs in bf16 (the numerics stay those of int8)."""
    import torch

    from sdopt.backends.base import BuildContext, Variant

    from ..conftest import verification_drops

    variant = Variant("openvino", "int8-sdpa-float", "int8",
                      options={"quantizer": "nncf", "ignored_types": ["ScaledDotProductAttention"]})
    ctx = BuildContext(device=detect("cpu"), example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration])
    with torch.inference_mode():
        module = get_backend("openvino").build(tiny_pipe.unet, variant, ctx)
    report = module_attention_report(module, samples.verification[0].inputs, THREADS)
    n = report["ir"]["ScaledDotProductAttention"]
    assert report["ir_sdpa_inputs_quantized"] == {"q": 0, "k": 0, "v": 0}
    assert report["attention"]["nodes"] == {f"Subgraph:{FLOAT}": n}
    assert max(verification_drops(module, samples)) <= 0.15  # test_backend_openvino's int8 bound


def test_perf_counters_attribute_the_attention_nodes(tiny_pipe, samples, modules):
    """Not a timing: the counters run, and the attention's nodes are the fused Subgraphs (or the
    decomposed MatMul/Softmax nodes), a part of the call's total."""
    from sdopt.backends.openvino_ops import module_perf_counters

    _report(tiny_pipe, samples, modules, "fp32")
    example = samples.verification[0].inputs
    fused = module_perf_counters(modules["fp32"], example, runs=1, config=THREADS, top=10_000)
    assert fused["attention_nodes"] == 12
    assert 0 < fused["attention_ms"] < fused["total_ms"]
    assert any(k.startswith("Subgraph:") for k in fused["by_type_ms"])
    assert any(node["attention"] and "attn" in node["name"] for node in fused["top_nodes"])
    decomposed = module_perf_counters(modules["fp32"], example, runs=1,
                                      config={**THREADS, "SNIPPETS_MODE": "DISABLE"})
    assert decomposed["attention_nodes"] == 36  # MatMul, Softmax, MatMul per attention
    assert any(k.startswith("Softmax:") for k in decomposed["by_type_ms"])
