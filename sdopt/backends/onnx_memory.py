"""Whether an ONNX model's activations fit in memory, read from its graph before ORT runs it.

ONNX Runtime's CPU provider runs attention as MatMul -> Softmax -> MatMul, so it holds the
(batch x heads x tokens x tokens) scores at least twice (the Softmax's input and output). The tiny
preset at 256 px has 16,384 tokens in its first attention: its int8 static calibration took 13.7
GB per sample and the demo was killed by the kernel at 24 GB. A killed process loses the whole
search; a candidate refused with the reason loses one row. torch and OpenVINO run attention as
one fused op, so this bound is ONNX Runtime's alone.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SdoptError

# Leave the rest of the machine's available memory to the pipeline, the search's own modules and
# the allocator's slack: ORT's arena and the graph's other tensors come on top of the bound.
FIT_FRACTION = 0.6

_BYTES = {1: 4, 10: 2, 16: 2, 11: 8, 6: 4, 7: 8, 2: 1, 3: 1, 9: 1}  # onnx.TensorProto elem types


def node_peak_bytes(model_path: Path) -> tuple[int, str] | None:
    """(the largest sum of one node's non-constant input and output bytes, that node's name): a
    lower bound of the graph's peak activation memory, as every tensor a node reads and writes is
    alive while it runs. None when shapes are not static."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the exporter's own value_info may suffice
        pass
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    sizes: dict[str, int] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensor = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tensor.elem_type not in _BYTES:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if any(d is None for d in dims):
            continue
        numel = 1
        for d in dims:
            numel *= d
        sizes[vi.name] = numel * _BYTES[tensor.elem_type]
    if not sizes:
        return None
    best = (0, "")
    for node in graph.node:
        names = {n for n in list(node.input) + list(node.output) if n and n not in constants}
        total = sum(sizes.get(n, 0) for n in names)
        if total > best[0]:
            best = (total, node.name or node.op_type)
    return best if best[0] else None


def check_activations_fit(model_path: Path, what: str, available_bytes: int | None = None) -> None:
    """Raise a one-line SdoptError when running ``model_path`` cannot fit in memory."""
    peak = node_peak_bytes(model_path)
    if peak is None:
        return
    if available_bytes is None:
        from ..host_memory import available_memory_bytes

        available_bytes = available_memory_bytes()
        if available_bytes is None:
            return
    need, node = peak
    if need > FIT_FRACTION * available_bytes:
        raise SdoptError(
            f"{what} needs at least {need / 2**30:.1f} GiB of activations at once (node {node}: "
            f"ONNX Runtime materialises attention scores), more than {FIT_FRACTION:.0%} of the "
            f"{available_bytes / 2**30:.1f} GiB available: use a smaller height/width for the "
            "search, or leave this backend out")
