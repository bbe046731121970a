"""OpenVINO int8 from min/max ranges in one statistics pass (#17): where its quantizers go
(NNCF's places), how ranges and weights are quantized, and the variants built through the
backend on the tiny UNet, with and without NNCF installed."""

import importlib.util

import numpy as np
import pytest

from ..conftest import build_variant, verification_drops

ov = pytest.importorskip("openvino", reason="the openvino package is not installed")

from openvino import opset13 as ops  # noqa: E402

from sdopt.backends import openvino_minmax_int8 as minmax  # noqa: E402
from sdopt.backends import get_backend  # noqa: E402
from sdopt.backends.openvino import IR_XML  # noqa: E402
from sdopt.device import detect  # noqa: E402

NNCF = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                          reason="the nncf package is not installed")


def _quantized_inputs(xml) -> dict[str, tuple[bool, ...]]:
    """Per Convolution, MatMul and attention node: which of its first two inputs come from a
    quantizer (through reshapes) or an int8 weight."""
    def quantized(output) -> bool:
        node = output.get_node()
        while node.get_type_name() in minmax.SHAPE_OPS:
            node = node.input(0).get_source_output().get_node()
        if node.get_type_name() == "Multiply":  # int8 weight * scale
            node = node.input(0).get_source_output().get_node()
            if node.get_type_name() == "Convert":
                return node.input(0).get_source_output().get_element_type() == ov.Type.i8
        return node.get_type_name() == "FakeQuantize"

    model = ov.Core().read_model(str(xml))
    return {op.get_friendly_name(): tuple(quantized(op.input(i).get_source_output())
                                          for i in range(min(2, op.get_input_size())))
            for op in model.get_ops() if op.get_type_name() in minmax.QUANTIZED_TYPES}


def _with_and_without_vnni():
    """This machine's CPU described with VNNI and without it (AVX2 only): the variants and
    weight bits that depend on it are checked on every CPU (the kernels run on this one)."""
    import dataclasses

    cpu = detect("cpu")
    return (dataclasses.replace(cpu, cpu_flags=("avx2", "avx512f", "avx512_vnni")),
            dataclasses.replace(cpu, cpu_flags=("avx2",)))


@NNCF
def test_quantizes_the_inputs_nncf_quantizes_within_the_int8_bound(tiny_pipe, samples):
    """The same layers in int8 as NNCF's calibration of the same graph, so the same kernels run;
    the error stays within the int8 variants' bound on the held-out calls."""
    nncf = build_variant(tiny_pipe, "openvino", "int8", samples)
    mine = build_variant(tiny_pipe, "openvino", "int8-minmax", samples)
    ours, theirs = (_quantized_inputs(m.ir_dir / IR_XML) for m in (mine, nncf))
    assert ours == theirs
    assert sum(any(v) for v in ours.values()) >= 100, "most layers are int8"
    info = mine.build_info["int8"]
    assert info["quantizer"] == "minmax" and info["float_activations"] == 0
    assert max(verification_drops(mine, samples)) <= 0.15


def test_inner_variant_is_derived_and_keeps_the_ends_float(tiny_pipe, samples, tmp_path):
    full = build_variant(tiny_pipe, "openvino", "int8-minmax", samples, cache_dir=tmp_path)
    inner = build_variant(tiny_pipe, "openvino", "int8-inner-minmax", samples,
                          cache_dir=tmp_path)
    info = inner.build_info["int8"]
    assert info["full_int8_key"] == full.build_info["int8"]["key"]
    layers = _quantized_inputs(inner.ir_dir / IR_XML)
    ends = {n: v for n, v in layers.items() if "conv_in" in n or "conv_out" in n}
    assert len(ends) == 2 and not any(any(v) for v in ends.values())
    assert max(verification_drops(inner, samples)) <= 0.15


def test_statistics_in_fp32_unless_they_do_not_fit():
    """fp32 ranges gave the smaller int8 error: bf16 only when the fp32 pass would not fit in
    the memory available, and never on a CPU without bf16 units."""
    gib = 2**30
    assert minmax.statistics_precision(10 * gib, 64 * gib, None) == ("f32", None)
    assert minmax.statistics_precision(10 * gib, None, None) == ("f32", None)
    precision, why = minmax.statistics_precision(10 * gib, 9 * gib, None)
    assert precision == "bf16"
    assert "needs about 17.0 GiB and 9.0 GiB is available" in why and "bf16" in why
    assert minmax.statistics_precision(10 * gib, 9 * gib, "no bf16 units")[0] == "f32"


def test_ranges_are_collected_in_bf16_when_fp32_does_not_fit(tiny_pipe, samples, tmp_path,
                                                           monkeypatch):
    from sdopt.backends import openvino

    fp32 = build_variant(tiny_pipe, "openvino", "int8-minmax", samples, cache_dir=tmp_path,
                         recorded_ranges=False)  # the pass runs: no ranges from the capture
    assert fp32.build_info["int8"]["statistics"] == "f32"
    if detect("cpu").precision_unavailable_reason("bf16"):
        pytest.skip("this CPU has no bf16 units: the statistics stay fp32")
    from sdopt.backends.base import fp32_weights_bytes

    # room for the bf16 pass (0.85 copies after the conversion), not for the fp32 one (1.7)
    weights = fp32_weights_bytes(tiny_pipe.unet)
    monkeypatch.setattr(openvino, "available_memory_bytes", lambda: weights)
    low = build_variant(tiny_pipe, "openvino", "int8-minmax", samples, cache_dir=tmp_path,
                        recorded_ranges=False)
    info = low.build_info["int8"]
    assert info["statistics"] == "bf16" and not info["hit"], "its own cache entry"
    assert info["ranges"] == "statistics pass (bf16)"
    assert info["key"] != fp32.build_info["int8"]["key"]
    assert max(verification_drops(low, samples)) <= 0.15


def test_a_statistics_pass_the_memory_cannot_hold_fails_its_candidate(tiny_pipe, samples,
                                                                    tmp_path, monkeypatch):
    """The search budgets a min/max build with the capture's ranges at 0.7 copies; when they
    miss a tensor the statistics pass that replaces them checks its own need first."""
    from sdopt.errors import SdoptError
    from sdopt.backends import openvino

    gib = 2**30
    assert minmax.statistics_shortfall(10 * gib, 20 * gib, "f32") is None
    assert minmax.statistics_shortfall(10 * gib, None, "bf16") is None
    why = minmax.statistics_shortfall(10 * gib, 5 * gib, "bf16")
    assert "bf16 statistics pass" in why and "8.5 GiB more memory; 5.0 GiB is available" in why
    monkeypatch.setattr(openvino, "available_memory_bytes", lambda: 1024)
    with pytest.raises(SdoptError, match="did not cover every quantized tensor"):
        build_variant(tiny_pipe, "openvino", "int8-minmax", samples, cache_dir=tmp_path,
                      recorded_ranges=False)
    # with the capture's ranges no pass runs, whatever the memory
    built = build_variant(tiny_pipe, "openvino", "int8-minmax", samples, cache_dir=tmp_path)
    assert built.build_info["int8"]["ranges"] == "capture"


def test_variants_need_no_nncf(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real(name, *a))
    backend, device = get_backend("openvino"), detect("cpu")
    reasons = {v.name: backend.unavailable_reason(device, v) for v in backend.variants(device)}
    assert reasons["int8-minmax"] is None and reasons["int8-inner-minmax"] is None
    assert "'nncf', which is not installed" in reasons["int8"]


def _model(nodes_of):
    """A one-input model [2, 4, 8, 8] whose graph ``nodes_of(parameter)`` builds."""
    x = ops.parameter([2, 4, 8, 8], np.float32, name="x")
    return ov.Model([n.output(0) for n in nodes_of(x)], [x], "toy")


def _rng_weight(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_ranges_symmetric_for_matmul_asymmetric_for_convolution():
    def graph(x):
        act = ops.swish(x)  # min about -0.28: an asymmetric range fits it
        conv = ops.convolution(act, ops.constant(_rng_weight(3, 4, 1, 1)), [1, 1], [0, 0],
                               [0, 0], [1, 1])
        flat = ops.reshape(x, ops.constant(np.array([2, 256], np.int64)), False)
        mm = ops.matmul(flat, ops.constant(_rng_weight(5, 256)), False, True)
        return conv, mm

    model = _model(graph)
    activations, weights = minmax.quantization_plan(model)
    symmetric = {t.get_node().get_type_name(): sym for t, sym in activations.values()}
    assert symmetric == {"Swish": False, "Parameter": True}, \
        "the MatMul's quantizer sits above the reshape, on the parameter"
    assert len(weights) == 2
    item = {"x": np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)}
    ranges = minmax.collect_ranges(model, [t for t, _ in activations.values()], [item])
    swish = item["x"] / (1 + np.exp(-item["x"]))
    at = [t.get_node().get_type_name() for t, _ in activations.values()].index("Swish")
    np.testing.assert_allclose(ranges[at], [swish.min(), swish.max()], rtol=1e-5)
    counts = minmax.insert_quantizers(model, activations, ranges, weights)
    assert counts == {"activation_quantizers": 2, "float_activations": 0, "int8_weights": 2,
                      "weight_bits": 8}
    fqs = {op.input(0).get_source_output().get_node().get_type_name():
           [float(op.input(i).get_source_output().get_node().get_data()) for i in (1, 2)]
           for op in model.get_ops() if op.get_type_name() == "FakeQuantize"}
    low, high = fqs["Swish"]
    assert low == pytest.approx(swish.min(), rel=1e-5) and high == pytest.approx(swish.max())
    low, high = fqs["Parameter"]
    bound = np.abs(item["x"]).max()
    assert low == pytest.approx(-bound) and high == pytest.approx(bound * 127 / 128)


@pytest.mark.parametrize("bits", [8, 7])
def test_weights_are_int8_per_output_channel_within_half_a_step(bits):
    """7 bits where the CPU's int8 products saturate (DeviceInfo.int8_weight_bits)."""
    weight = _rng_weight(5, 256) * np.arange(1, 6, dtype=np.float32)[:, None]

    def graph(x):
        flat = ops.reshape(x, ops.constant(np.array([2, 256], np.int64)), False)
        return (ops.matmul(flat, ops.constant(weight), False, True),)

    model = _model(graph)
    activations, weights = minmax.quantization_plan(model)
    minmax.insert_quantizers(model, activations, np.array([[-3.0, 3.0]]), weights, bits)
    consts = [op for op in model.get_ops() if op.get_type_name() == "Constant"
              and op.get_element_type() == ov.Type.i8]
    assert len(consts) == 1
    q = consts[0].get_data().astype(np.float32)
    top = 2 ** (bits - 1) - 1
    scale = weight.__abs__().max(axis=1, keepdims=True) / top
    assert np.abs(q).max() == top and np.all(np.abs(q * scale - weight) <= scale / 2 + 1e-6)


def test_a_tensor_with_infinite_range_stays_float():
    """An attention mask's -inf would be clamped to a finite value by a quantizer."""
    mask = np.zeros((2, 256), np.float32)
    mask[:, 0] = -np.inf

    def graph(x):
        flat = ops.reshape(x, ops.constant(np.array([2, 256], np.int64)), False)
        masked = ops.add(flat, ops.constant(mask))
        return (ops.matmul(masked, ops.constant(_rng_weight(5, 256)), False, True),)

    model = _model(graph)
    activations, weights = minmax.quantization_plan(model)
    item = {"x": np.ones((2, 4, 8, 8), np.float32)}
    ranges = minmax.collect_ranges(model, [t for t, _ in activations.values()], [item])
    counts = minmax.insert_quantizers(model, activations, ranges, weights)
    assert counts["float_activations"] == 1 and counts["activation_quantizers"] == 0
    assert not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def test_the_build_takes_the_devices_weight_bits(tiny_pipe, samples, tmp_path):
    """A CPU without VNNI gets 7-bit weights, in another cached IR than 8-bit ones, and a loaded
    8-bit graph says why it computes worse there."""
    from sdopt.backends.openvino import saturation_reason

    vnni, avx2 = _with_and_without_vnni()
    assert (vnni.int8_weight_bits(), avx2.int8_weight_bits()) == (8, 7)
    built = {b: build_variant(tiny_pipe, "openvino", "int8-minmax", samples, device=d,
                              cache_dir=tmp_path)
             for b, d in ((8, vnni), (7, avx2))}
    for bits, module in built.items():
        assert module.build_info["int8"]["weight_bits"] == bits
        model = ov.Core().read_model(str(module.ir_dir / IR_XML))
        top = max(int(np.abs(op.get_data().astype(np.int32)).max()) for op in model.get_ops()
                  if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8)
        assert top == 2 ** (bits - 1) - 1
    assert built[8].build_info["int8"]["key"] != built[7].build_info["int8"]["key"]
    assert "7-bit" in saturation_reason(built[8].build_info, avx2)
    assert saturation_reason(built[7].build_info, avx2) is None
    assert saturation_reason(built[8].build_info, vnni) is None


def test_without_vnni_convolutions_alone_are_int8(tiny_pipe, samples, tmp_path):
    """On a CPU without VNNI (int8 MatMuls slower than float there, int8 attention decomposed)
    the backend offers int8-conv-minmax: every convolution but the network's ends in int8, every
    MatMul and attention in float; on a VNNI CPU it is not offered."""
    vnni, avx2 = _with_and_without_vnni()
    backend = get_backend("openvino")
    assert "int8-conv-minmax" not in {v.name for v in backend.variants(vnni)}
    variant = next(v for v in backend.variants(avx2) if v.name == "int8-conv-minmax")
    assert variant.options["quantizer"] == "minmax"
    assert "fp32 MatMul, attention and conv_in/conv_out" in variant.techniques
    module = build_variant(tiny_pipe, "openvino", "int8-conv-minmax", samples, device=avx2,
                           cache_dir=tmp_path)
    layers = _quantized_inputs(module.ir_dir / IR_XML)
    model = ov.Core().read_model(str(module.ir_dir / IR_XML))
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    int8 = {n for n, v in layers.items() if any(v)}
    convolutions = {n for n in layers if kinds[n] == "Convolution"}
    assert int8 and int8 <= convolutions, int8 - convolutions
    assert {n for n in convolutions - int8} == \
        {n for n in convolutions if "conv_in" in n or "conv_out" in n}
    assert module.build_info["int8"]["weight_bits"] == 7
    assert max(verification_drops(module, samples)) <= 0.15


@NNCF
def test_without_vnni_nncf_calibrates_the_same_convolutions(tiny_pipe, samples, tmp_path):
    """int8-conv-nncf is NNCF's calibration of int8-conv-minmax's layers (the same int8 graph,
    which the search bounds by the min/max one's speed; another error), offered where it is."""
    vnni, avx2 = _with_and_without_vnni()
    backend = get_backend("openvino")
    assert "int8-conv-nncf" not in {v.name for v in backend.variants(vnni)}
    twin = next(v for v in backend.variants(avx2) if v.name == "int8-conv-nncf")
    assert twin.options["same_graph_as"] == twin.options["rescue_of"] == ["int8-conv-minmax"]
    assert "fp32 MatMul, attention and conv_in/conv_out" in twin.techniques
    built = {name: build_variant(tiny_pipe, "openvino", name, samples, device=avx2,
                                 cache_dir=tmp_path)
             for name in ("int8-conv-minmax", "int8-conv-nncf")}
    int8 = {name: {n for n, v in _quantized_inputs(m.ir_dir / IR_XML).items() if any(v)}
            for name, m in built.items()}
    assert int8["int8-conv-nncf"] and int8["int8-conv-nncf"] == int8["int8-conv-minmax"]
    calibrated = built["int8-conv-nncf"]
    assert calibrated.build_info["int8"]["quantizer"] == "nncf.quantize"
    assert calibrated.build_info["int8"]["weight_bits"] == 7
    assert max(verification_drops(calibrated, samples)) <= 0.15

