"""int8 post-training quantization of an OpenVINO model from min/max ranges, in one pass.

NNCF's quantization of the SD 1.5 UNet (256 px, 2 cores) takes 250 s, and most of it does not
depend on the data: 121 s compile one statistics model with 1797 extra outputs (OpenVINO's CPU
compile time grows far faster than the output count: 201 outputs compile in 3 s, the plain model
in 2.8 s), then SmoothQuant's pass, 186 bias-correction subgraphs (compiled one by one) and 20 s
of graph pattern matching. Here every range is reduced to two scalars inside the graph and all
of them are concatenated into **one** output: the statistics model compiles in 4.5 s and the whole
quantization takes about 30 s.

The quantizers go where NNCF puts them (compared node for node on sd15: the same Convolution,
MatMul and attention inputs are quantized): activation inputs of convolutions and MatMuls and the
Q and K inputs of ScaledDotProductAttention (V stays float), one quantizer per tensor, moved above
reshapes; weights symmetric per output channel (255 levels, or 127 where the CPU's int8 dot
products saturate: ``DeviceInfo.int8_weight_bits``), stored as int8 with their scale.
Activation ranges are NNCF's for per-tensor activations: the mean over samples of each sample's
minimum and maximum. MatMul and attention inputs are symmetric (asymmetric ones ran 5% slower:
OpenVINO's int8 MatMul takes no zero point), convolution inputs asymmetric.

What it lacks against NNCF is SmoothQuant and bias correction. On sd15 at 256 px (random weights)
int8-inner's worst prompt drop was 0.040 against NNCF's 0.029, full int8's 0.076 against 0.078,
at the same speed (1.00-1.05x paired): so the search tries these first and NNCF's calibration only
when they are rejected (``ordering``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..cpu_threads import openvino_thread_config

QUANTIZED_TYPES = ("Convolution", "MatMul", "ScaledDotProductAttention")
# An attention's Q and K (NNCF's scope for it): softmax(QK^T) runs in int8, V stays float.
SDPA_PORTS = (0, 1)
# Ops that only move values: a quantizer above them quantizes the same values once.
SHAPE_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze")
LEVELS = 256
WEIGHT_BITS = 8  # symmetric narrow range (255 levels), NNCF's for weights; 7 without VNNI
RECIPE = 1  # bump when the placement or the ranges change: cached IRs become stale


def _source_kind(output) -> str:
    node = output.get_node()
    while node.get_type_name() in ("Convert",) + SHAPE_OPS:
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name()


def _above_shape_ops(output):
    """The tensor whose quantizer serves this input: up through shape-only ops with one user."""
    while output.get_node().get_type_name() in SHAPE_OPS and len(output.get_target_inputs()) == 1:
        source = output.get_node().input(0).get_source_output()
        if _source_kind(source) == "Constant":
            break
        output = source
    return output


def _key(output) -> tuple[str, int]:
    return output.get_node().get_friendly_name(), output.get_index()


def quantization_plan(model, ignored_types=(), ignored_patterns=(), consumers=None):
    """(activation tensors: {key: (output, symmetric)}, weights: [(op, port)]) to quantize;
    ``consumers``, a dict, gets each tensor's quantized (op type, op name, port) uses."""
    patterns = [re.compile(p) for p in ignored_patterns]  # re.match, as NNCF's IgnoredScope
    activations: dict[tuple[str, int], list] = {}
    weights = []
    for op in model.get_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        if kind not in QUANTIZED_TYPES or kind in ignored_types \
                or any(p.match(name) for p in patterns):
            continue
        ports = SDPA_PORTS if kind == "ScaledDotProductAttention" else range(op.get_input_size())
        for port in ports:
            source = op.input(port).get_source_output()
            if _source_kind(source) == "Constant":
                if kind != "ScaledDotProductAttention" \
                        and source.get_node().get_type_name() == "Constant":
                    weights.append((op, port))
                continue
            tensor = _above_shape_ops(source)
            if tensor.get_partial_shape().rank.is_dynamic:
                continue
            entry = activations.setdefault(_key(tensor), [tensor, True])
            entry[1] = entry[1] and kind != "Convolution"
            if consumers is not None:
                consumers.setdefault(_key(tensor), []).append((kind, name, port))
    return {k: (v[0], v[1]) for k, v in activations.items()}, weights


def statistics_model(model, tensors):
    """The model with one output: each tensor's minimum and maximum, concatenated."""
    import openvino as ov
    from openvino import opset13 as ops

    one = ops.constant(np.array([1], np.int64))
    parts = []
    for tensor in tensors:
        axes = ops.constant(np.arange(tensor.get_partial_shape().rank.get_length(), dtype=np.int64))
        for reduce in (ops.reduce_min, ops.reduce_max):
            parts.append(ops.reshape(ops.convert(reduce(tensor, axes, False), ov.Type.f32),
                                     one, False))
    return ov.Model([ops.concat(parts, 0).output(0)], model.get_parameters(),
                    "sdopt_minmax_statistics")


# The statistics model compiled for fp32 inference holds about one more copy of the weights than
# the IR on disk (its repacked constants beside the mapped file): on the SDXL UNet (10.3 GB) it
# took the search from 14.8 GiB to this machine's 23.3 GiB, where it stalled. The whole build's
# anonymous peak is 1.67 copies of the fp32 weights with fp32 statistics and 1.11 with bf16 ones
# (benchmarks/candidate_memory.py, 800 MB UNet); on sd15 the bf16 pass also ran 1.8x faster.
# But bf16 ranges (0.04% median, 0.3% at most apart from fp32's) left the sd15 int8-inner UNet
# with a 10% larger error (worst prompt 0.0429 against 0.0392, 2026-12-01): fp32 whenever it
# fits, bf16 only when it does not.
FP32_STATISTICS_WEIGHT_COPIES = 1.7
BF16_STATISTICS_WEIGHT_COPIES = 1.2


def statistics_precision(weights_bytes: int, available_bytes: int | None,
                         bf16_reason: str | None) -> tuple[str, str | None]:
    """("f32" or "bf16", why not fp32) for a statistics pass over ``weights_bytes`` of fp32
    weights with ``available_bytes`` of memory free; ``bf16_reason``: why this CPU cannot run
    bf16 (None: it can)."""
    need = FP32_STATISTICS_WEIGHT_COPIES * weights_bytes
    if available_bytes is None or need <= available_bytes or bf16_reason is not None:
        return "f32", None
    return "bf16", (f"the fp32 statistics pass needs about {need / 2**30:.1f} GiB and "
                    f"{available_bytes / 2**30:.1f} GiB is available: ranges collected in bf16 "
                    f"(about {BF16_STATISTICS_WEIGHT_COPIES * weights_bytes / 2**30:.1f} GiB; "
                    "on sd15 their int8 error was 10% larger)")


# Of a whole min/max build's peak, what converting to the fp32 IR takes before the statistics
# pass (0.35 copies, benchmarks/candidate_memory.py, 2026-12-01): held already when it starts.
CONVERSION_WEIGHT_COPIES = 0.35


def statistics_shortfall(weights_bytes: int, available_bytes: int | None,
                         precision: str) -> str | None:
    """Why a statistics pass in ``precision`` over ``weights_bytes`` of fp32 weights, started
    after the conversion, would not fit in ``available_bytes`` (None: it fits, or unknown). The
    search budgets a min/max build given the capture's ranges without one (0.7 copies): this
    is the check for a graph whose ranges the capture did not all record."""
    copies = (FP32_STATISTICS_WEIGHT_COPIES if precision == "f32"
              else BF16_STATISTICS_WEIGHT_COPIES) - CONVERSION_WEIGHT_COPIES
    need = copies * weights_bytes
    if available_bytes is None or need <= available_bytes:
        return None
    return (f"the capture's int8 ranges did not cover every quantized tensor, and the {precision} "
            f"statistics pass that measures them needs about {need / 2**30:.1f} GiB more "
            f"memory; {available_bytes / 2**30:.1f} GiB is available")


def collect_ranges(model, tensors, items: list[dict[str, Any]],
                   precision: str = "f32") -> np.ndarray:
    """(n, 2): per tensor, the mean over ``items`` of each item's min and max, inferred in
    ``precision`` (:func:`statistics_precision`)."""
    import openvino as ov

    stats = statistics_model(model, tensors)
    shapes = {name: {tuple(np.shape(item[name])) for item in items} for name in items[0]}
    if all(len(s) == 1 for s in shapes.values()):
        # Static shapes, as the calls have: with the converted IR's dynamic ones the first
        # inference took 9.5 s instead of 3.5 s on sd15 at 256 px, for a compile 2.4 s shorter
        stats.reshape({name: list(s.pop()) for name, s in shapes.items()})
    compiled = ov.Core().compile_model(stats, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      **openvino_thread_config()})
    request = compiled.create_infer_request()
    per_item = [np.array(request.infer(item)[0], dtype=np.float64).reshape(-1, 2)
                for item in items]
    return np.mean(per_item, axis=0)


def _weight_axis(op, port: int, ndim: int) -> int | None:
    """The weight's output-channel axis (None: quantize it per tensor)."""
    if op.get_type_name() == "Convolution":
        return 0
    if port == 1 and ndim >= 2:
        return ndim - 2 if op.get_transpose_b() else ndim - 1
    return None


def _int8_weight(op, port: int, bits: int = WEIGHT_BITS):
    from openvino import Type
    from openvino import opset13 as ops

    import torch

    # torch, not numpy: its kernels use every core and round the same way (half to even);
    # sd15's 860 M weights took 4.2 s of the int8 build in numpy. The constant's buffer is
    # read-only and only read here: torch's warning about it (printed in every build) is not
    # the user's concern, and a copy would cost a weight's size.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        weight = torch.from_numpy(np.asarray(
            op.input(port).get_source_output().get_node().get_data(), np.float32))
    axis = _weight_axis(op, port, weight.ndim)
    reduce = [a for a in range(weight.ndim) if a != axis]
    amax = weight.abs().amax(dim=reduce, keepdim=True) if reduce else weight.abs()
    half = 2 ** (bits - 1) - 1
    scale = torch.where(amax > 0, amax / half, torch.ones_like(amax))
    q = torch.round(weight / scale).clamp_(-half, half).to(torch.int8)
    return ops.multiply(ops.convert(ops.constant(q.numpy()), Type.f32),
                        ops.constant(scale.numpy()))


def insert_quantizers(model, activations, ranges: np.ndarray, weights,
                      weight_bits: int = WEIGHT_BITS) -> dict[str, int]:
    from openvino import opset13 as ops

    skipped = 0
    for (tensor, symmetric), (low, high) in zip(activations.values(), ranges):
        if not (np.isfinite(low) and np.isfinite(high)):
            skipped += 1  # a mask's -inf: quantizing it would destroy it; it stays float
            continue
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        if symmetric:
            bound = max(-low, high)
            low, high = -bound, bound * (LEVELS // 2 - 1) / (LEVELS // 2)
        if high - low < 1e-12:
            skipped += 1
            continue
        users = list(tensor.get_target_inputs())
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        quantizer = ops.fake_quantize(tensor, lo, hi, lo, hi, LEVELS)
        quantizer.set_friendly_name(f"{tensor.get_node().get_friendly_name()}"
                                    f"/sdopt_fq_{tensor.get_index()}")
        for user in users:
            user.replace_source_output(quantizer.output(0))
    compressed: dict[str, Any] = {}
    for op, port in weights:
        constant = op.input(port).get_source_output().get_node()
        name = constant.get_friendly_name()
        if name not in compressed:
            compressed[name] = _int8_weight(op, port, weight_bits)
        op.input(port).replace_source_output(compressed[name].output(0))
    model.validate_nodes_and_infer_types()
    return {"activation_quantizers": len(activations) - skipped, "float_activations": skipped,
            "int8_weights": len(compressed), "weight_bits": weight_bits}


def quantize_minmax(fp32_model, items: list[dict[str, Any]], out_xml: Path, *,
                    ignored_types=(), ignored_patterns=(), statistics: str = "f32",
                    recorded: list[dict] | None = None,
                    before_statistics: Callable[[], None] | None = None,
                    weight_bits: int = WEIGHT_BITS) -> dict[str, Any]:
    """Write the int8 IR of ``fp32_model`` (an ``openvino.Model``, left as it is: the quantizers
    go into a clone, which shares its weights) to ``out_xml``. ``recorded``: the ranges the
    capture recorded for each of ``items`` (:mod:`.activation_ranges`); when they cover every
    quantized tensor no statistics pass runs; else ``before_statistics`` is called first (it
    raises when the pass would not fit in memory)."""
    import openvino as ov

    from .activation_ranges import graph_key, mean_ranges

    model = fp32_model.clone()
    uses: dict[tuple[str, int], list] = {}
    activations, weights = quantization_plan(model, ignored_types, ignored_patterns, uses)
    ranges = None
    if recorded and len(recorded) == len(items):
        found = mean_ranges([[graph_key(*use) for use in uses[k]] for k in activations], recorded)
        ranges = None if found is None else np.array(found, dtype=np.float64).reshape(-1, 2)
    source = "capture" if ranges is not None else f"statistics pass ({statistics})"
    if ranges is None:
        if before_statistics is not None:
            before_statistics()
        stats_model = fp32_model.clone()  # the statistics model shares its nodes
        tensors, _ = quantization_plan(stats_model, ignored_types, ignored_patterns)
        if list(activations) != list(tensors):
            raise RuntimeError("the quantization plan differs between two clones of the same IR")
        ranges = collect_ranges(stats_model, [t for t, _ in tensors.values()], items, statistics)
        del stats_model
    counts = insert_quantizers(model, activations, ranges, weights, weight_bits)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return {"quantizer": "minmax", "recipe": RECIPE, "samples": len(items),
            "statistics": statistics, "ranges": source, **counts,
            "ignored_types": list(ignored_types), "ignored_patterns": list(ignored_patterns),
            "openvino": ov.get_version()}


def _fed_inputs(output):
    """The op inputs ``output`` feeds, down through shape-only ops."""
    for target in output.get_target_inputs():
        node = target.get_node()
        if node.get_type_name() in SHAPE_OPS:
            yield from _fed_inputs(node.output(0))
        else:
            yield target


def _scalar(output) -> float | None:
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    data = np.asarray(node.get_data(), np.float64).reshape(-1)
    return float(data[0]) if data.size == 1 else None


def ranges_by_input(quantized_model) -> dict[tuple[str, int], tuple[float, float]]:
    """The per-tensor activation ranges of an int8 graph, by the op input each quantizer feeds:
    ``{(op name, port): (low, high)}``, the names :func:`quantization_plan` records as uses."""
    out: dict[tuple[str, int], tuple[float, float]] = {}
    for op in quantized_model.get_ops():
        if op.get_type_name() != "FakeQuantize" \
                or _source_kind(op.input(0).get_source_output()) == "Constant":
            continue
        low, high = (_scalar(op.input(i).get_source_output()) for i in (1, 2))
        if low is None or high is None:
            continue  # per-channel: not a range this module writes
        for target in _fed_inputs(op.output(0)):
            node = target.get_node()
            if node.get_type_name() in QUANTIZED_TYPES:
                out[(node.get_friendly_name(), target.get_index())] = (low, high)
    return out


def quantize_like(fp32_model, quantized_model, *, ignored_types=(), ignored_patterns=(),
                  weight_bits: int = WEIGHT_BITS) -> tuple[Any, dict[str, Any]]:
    """``fp32_model`` (a variant of the graph ``quantized_model`` was quantized from: the same
    layers with a few ops added, as token merging adds) quantized with ``quantized_model``'s own
    activation ranges, taken by the op input each quantizer feeds, and its weights' recipe.
    A tensor none of whose uses had a quantizer there (the added ops' inputs) stays float. No
    statistics pass: the ranges are those the search judged. ``weight_bits``: those of
    ``quantized_model``'s weights (its build's ``weight_bits``). Returns (a quantized clone,
    counts)."""
    known = ranges_by_input(quantized_model)
    model = fp32_model.clone()
    uses: dict[tuple[str, int], list] = {}
    activations, weights = quantization_plan(model, ignored_types, ignored_patterns, uses)
    kept, ranges = {}, []
    for key, entry in activations.items():
        found = [known[(name, port)] for _, name, port in uses.get(key, ())
                 if (name, port) in known]
        if found:
            kept[key] = entry
            ranges.append((min(r[0] for r in found), max(r[1] for r in found)))
    counts = insert_quantizers(model, kept, np.array(ranges, np.float64).reshape(-1, 2), weights,
                               weight_bits)
    counts["float_activations"] += len(activations) - len(kept)
    return model, counts
