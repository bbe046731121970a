"""What OpenVINO really runs: op types of an IR and of the CPU plugin's compiled (runtime) model,
and how each ``ScaledDotProductAttention`` op of the IR is executed.

The CPU plugin (2026.4) never runs a UNet's SDPA op as its own ``ScaledDotProductAttention``
node: that kernel is kept for LLMs (SDPA fed by a KV cache, ``StatefulSDPAFusion``); every other
SDPA is decomposed (MatMul, Multiply, Softmax, MatMul) during compilation and the Snippets
MHA tokenizer then fuses the decomposed attention back into one ``Subgraph`` node, a generated
brgemm kernel (AMX/VNNI where the CPU has them). With ``SNIPPETS_MODE=DISABLE`` the decomposed
nodes run one by one, which is the "before" of a per-op comparison. Measured on the tiny preset
(12 SDPA ops): every variant, int8 included (NNCF's FakeQuantize on Q and K), runs one
``Subgraph`` per SDPA op; its runtime precision is f32, bf16, or i8 for int8 (QK^T in int8).

A runtime node belongs to an SDPA op when the op's friendly name is among the node's
``originalLayersNames`` (the plugin keeps the fused names of every op it merged or decomposed).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

SDPA = "ScaledDotProductAttention"
# Runtime layer types that mean "attention ran decomposed" when they carry an SDPA op's name.
DECOMPOSED_TYPES = ("MatMul", "Softmax", "FullyConnected")
# Ops NNCF's quantizer may sit behind on the way to an SDPA input (it quantizes the activation
# before layout ops, which are quantization-agnostic).
_LAYOUT_OPS = ("Transpose", "Reshape", "Convert", "Squeeze", "Unsqueeze")


def ir_op_counts(model) -> dict[str, int]:
    """Op types of an ``ov.Model`` (an IR as read or converted), most frequent first."""
    return dict(Counter(op.get_type_name() for op in model.get_ops()).most_common())


def _rt(op, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def runtime_op_counts(compiled) -> dict[str, int]:
    """Layer types of a compiled model's runtime (execution) graph, most frequent first, as
    ``get_runtime_model()`` lists them (``layerType``: Subgraph, Convolution, FullyConnected...)."""
    return dict(Counter(_rt(op, "layerType") for op in compiled.get_runtime_model().get_ops())
                .most_common())


def runtime_precisions(compiled, layer_types=None) -> dict[str, int]:
    """``"<layerType>:<runtimePrecision>"`` counts, for ``layer_types`` only when given."""
    out = Counter()
    for op in compiled.get_runtime_model().get_ops():
        kind = _rt(op, "layerType")
        if layer_types is None or kind in layer_types:
            out[f"{kind}:{_rt(op, 'runtimePrecision')}"] += 1
    return dict(out.most_common())


def _quantized_source(port) -> bool:
    node = port.get_source_output().get_node()
    while node.get_type_name() in _LAYOUT_OPS:
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "FakeQuantize"


def sdpa_inputs_quantized(model) -> dict[str, int]:
    """How many SDPA ops have a FakeQuantize (through layout ops) on Q, K and V."""
    out = {"q": 0, "k": 0, "v": 0}
    for op in model.get_ops():
        if op.get_type_name() == SDPA:
            for i, key in enumerate(("q", "k", "v")):
                out[key] += _quantized_source(op.input(i))
    return out


def attention_execution(model, compiled) -> dict[str, Any]:
    """How the runtime executes each SDPA op of ``model`` (the IR ``compiled`` was built from).

    Each SDPA op is one of: ``"sdpa"`` (the plugin's own ScaledDotProductAttention node),
    ``"fused_subgraph"`` (one Snippets Subgraph holding its Softmax, no MatMul/Softmax node of
    its own), ``"decomposed"`` (MatMul/Softmax runtime nodes), ``"unmapped"`` (no runtime node
    names it). ``nodes`` counts the runtime nodes carrying an SDPA name by layer type and
    precision (a bf16 model adds a Transpose/Reorder next to the Subgraph)."""
    names = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == SDPA}
    per_op: dict[str, list[tuple[str, str, str]]] = {name: [] for name in names}
    for op in compiled.get_runtime_model().get_ops():
        kind = _rt(op, "layerType")
        if kind in ("Const", "Input", "Output"):
            continue
        original = _rt(op, "originalLayersNames")
        for name in names.intersection(original.split(",")):
            per_op[name].append((kind, _rt(op, "runtimePrecision"), original))
    kinds: Counter = Counter()
    nodes: Counter = Counter()
    for name, found in per_op.items():
        types = {kind for kind, _, _ in found}
        for kind, precision, _ in found:
            nodes[f"{kind}:{precision}"] += 1
        if SDPA in types:
            kinds["sdpa"] += 1
        elif types & set(DECOMPOSED_TYPES):
            kinds["decomposed"] += 1
        elif any(kind == "Subgraph" and "Softmax" in original for kind, _, original in found):
            kinds["fused_subgraph"] += 1
        else:
            kinds["unmapped"] += 1
    return {"ir_sdpa": len(names),
            "execution": {k: kinds.get(k, 0)
                          for k in ("sdpa", "fused_subgraph", "decomposed", "unmapped")},
            "nodes": dict(nodes.most_common())}


def attention_report(model, compiled) -> dict[str, Any]:
    """IR and runtime op counts, the attention's execution and its precisions, as JSON data."""
    ir = ir_op_counts(model)
    runtime = runtime_op_counts(compiled)
    watched = (SDPA, "MatMul", "Softmax", "FakeQuantize")
    return {
        "ir": {k: ir.get(k, 0) for k in watched},
        "ir_sdpa_inputs_quantized": sdpa_inputs_quantized(model),
        "runtime": {k: runtime.get(k, 0) for k in (SDPA, "Subgraph", *DECOMPOSED_TYPES)},
        "attention": attention_execution(model, compiled),
        "runtime_precisions": runtime_precisions(
            compiled, (SDPA, "Subgraph", *DECOMPOSED_TYPES, "Convolution")),
        "ir_ops": ir,
        "runtime_ops": runtime,
    }


def module_attention_report(module, example, config: dict[str, Any] | None = None
                            ) -> dict[str, Any]:
    """:func:`attention_report` of an :class:`~sdopt.backends.openvino.OpenVINOModule` compiled
    as its UNet call compiles it for the shapes of ``example`` (a UNetInputs); ``config`` adds CPU
    properties (``{"SNIPPETS_MODE": "DISABLE"}``: attention decomposed, for a before/after)."""
    from .export import named_args

    model = module.graph.model
    given = named_args(example)
    shapes = [tuple(given[name].shape) for name in module.graph.names]
    compiled = module.graph.compile_for(shapes, config)
    return {"variant": module.variant.id, "hint": module.hint, "config": dict(config or {}),
            "shapes": [list(s) for s in shapes], **attention_report(model, compiled)}


def attention_node_names(model, compiled) -> set[str]:
    """Names of the runtime nodes that execute attention: those naming an SDPA op of ``model``,
    the Subgraphs holding a Softmax, and the MatMul/Softmax nodes (decomposed attention; in a
    UNet every softmax and every MatMul left after Linear layers became FullyConnected is
    attention's)."""
    names = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == SDPA}
    out = set()
    for op in compiled.get_runtime_model().get_ops():
        kind, original = _rt(op, "layerType"), _rt(op, "originalLayersNames")
        if (names.intersection(original.split(",")) or kind in ("MatMul", "Softmax", SDPA)
                or (kind == "Subgraph" and "Softmax" in original)):
            out.add(op.get_friendly_name())
    return out


def module_perf_counters(module, example, runs: int = 3, config: dict[str, Any] | None = None,
                         top: int = 20) -> dict[str, Any]:
    """OpenVINO's per-node counters (``PERF_COUNT``) of ``module`` compiled for ``example``'s
    shapes, one warm-up then ``runs`` inferences: per run the total, the attention nodes' time
    (:func:`attention_node_names`), the time per ``layerType:execType`` and the ``top`` slowest
    nodes (their names tell self-attention ``attn1`` from cross-attention ``attn2``); medians over
    runs. A timing: run it on a quiet machine only."""
    import statistics

    import openvino as ov

    from .export import named_args

    runs = max(1, runs)
    model = module.graph.model
    given = named_args(example)
    arrays = {name: given[name].detach().cpu().numpy() for name in module.graph.names}
    compiled = module.graph.compile_for([a.shape for a in arrays.values()],
                                        {**(config or {}), "PERF_COUNT": True})
    attention = attention_node_names(model, compiled)
    request = compiled.create_infer_request()
    request.infer(arrays)
    per_run = []
    for _ in range(runs):
        request.infer(arrays)
        by_type: Counter = Counter()
        by_node: dict[tuple[str, str, str], float] = {}
        total = att = 0.0
        for info in request.get_profiling_info():
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1e3
            total += ms
            by_type[f"{info.node_type}:{info.exec_type}"] += ms
            by_node[(info.node_name, info.node_type, info.exec_type)] = ms
            if info.node_name in attention:
                att += ms
        per_run.append((total, att, by_type, by_node))
    keys = set().union(*(r[2] for r in per_run))
    by_type_ms = {k: statistics.median(r[2].get(k, 0.0) for r in per_run) for k in keys}
    total_ms = statistics.median(r[0] for r in per_run)
    attention_ms = statistics.median(r[1] for r in per_run)
    nodes = {k: statistics.median(r[3].get(k, 0.0) for r in per_run) for k in per_run[0][3]}
    slowest = sorted(nodes.items(), key=lambda kv: -kv[1])[:top]
    return {"runs": runs, "config": dict(config or {}), "total_ms": round(total_ms, 3),
            "attention_ms": round(attention_ms, 3),
            "attention_share": round(attention_ms / total_ms, 4) if total_ms else None,
            "attention_nodes": len(attention),
            "by_type_ms": {k: round(v, 3) for k, v in
                           sorted(by_type_ms.items(), key=lambda kv: -kv[1])},
            "top_nodes": [{"name": name, "type": kind, "exec": exec_type, "ms": round(ms, 3),
                           "attention": name in attention}
                          for (name, kind, exec_type), ms in slowest]}
