"""Activation ranges recorded while the original pipeline runs: int8 without a statistics pass.

OpenVINO's min/max int8 (:mod:`.openvino_minmax_int8`) needs, for each tensor it quantizes, the
minimum and maximum over the calibration calls. Its own statistics pass compiles the fp32 UNet
with every range as an output and runs the calibration calls again: 31 s of a 272 s cold sd15
demo search (compile 6.6 s, then about 3 s per call), holding 1.7 copies of the fp32 weights
while it runs (the SDXL UNet's search stalled at 23 GiB). The capture runs those very calls in
fp32 torch already, so hooks record the same ranges there: the input of each convolution and
linear layer of the denoiser, and the query and key each attention module passes to
``scaled_dot_product_attention`` (after any norm or rotary embedding, as the graph has them).

The OpenVINO graph names each op after the torch module it was converted from
(``__module.unet.<module path>/aten::<op>/<type>``): :func:`graph_key` maps a quantized op's
input to what was recorded. A module called twice in one call (its two ops would share a name)
is recorded as ambiguous, and a tensor that maps to nothing (another converter's naming, a
MatMul of two activations) sends the build back to the statistics pass.
"""

from __future__ import annotations

import time

import torch
from torch.overrides import TorchFunctionMode

AMBIGUOUS = None  # a key recorded twice in one call


def input_key(module_path: str) -> str:
    """The key of a convolution's or linear layer's input."""
    return f"input:{module_path}"


def attention_key(module_path: str, port: int) -> str:
    """The key of an attention module's query (port 0) or key (port 1)."""
    return f"sdpa:{module_path}:{port}"


# The export wrapper (export.UNetForExport) holds the denoiser as ``unet``: graph names start
# with it, torch's module paths (relative to the denoiser) do not.
_GRAPH_PREFIX = "__module.unet."
_LAYER_TYPES = {"Convolution", "MatMul"}


def graph_key(op_type: str, op_name: str, port: int) -> str | None:
    """The recorded key that holds the range of input ``port`` of the graph op ``op_name``;
    None where the name carries no module path or the op is not one the hooks see."""
    head = op_name.split("/", 1)[0]
    if not head.startswith(_GRAPH_PREFIX) or "/aten::" not in op_name:
        return None
    path = head[len(_GRAPH_PREFIX):]
    if op_type == "ScaledDotProductAttention" and "aten::scaled_dot_product_attention" in op_name:
        return attention_key(path, port)
    if op_type in _LAYER_TYPES and port == 0 and (
            "aten::_convolution" in op_name or "aten::linear" in op_name):
        return input_key(path)
    return None


class _AttentionCalls(TorchFunctionMode):
    """Sees the ``scaled_dot_product_attention`` calls of the attention module running."""

    def __init__(self, recorder: "RangeRecorder"):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        started = time.perf_counter()
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and self.recorder.attention:
            path = self.recorder.attention[-1]
            query = args[0] if len(args) > 0 else kwargs.get("query")
            key = args[1] if len(args) > 1 else kwargs.get("key")
            self.recorder.note(attention_key(path, 0), query)
            self.recorder.note(attention_key(path, 1), key)
        self.recorder.spent(started)
        return func(*args, **kwargs)


class RangeRecorder:
    """Records, per call of ``denoiser``, {key: (min, max)}; :meth:`take` after each call.

    Its hooks cost time inside the call, which the capture also times: on the tiny preset (a
    17 ms call) they made the original look 1.5x slower than side by side. So the mode that
    sees attention runs only inside attention modules, and the seconds spent in the hooks are
    counted (``spent_s`` after a take) for the capture to take out of the call's time."""

    def __init__(self, denoiser: torch.nn.Module):
        self.attention: list[str] = []  # the attention modules running, innermost last
        self.spent_s = 0.0  # in the hooks during the call last taken
        self._spent = 0.0
        self._current: dict[str, tuple[float, float] | None] = {}
        self._handles = []
        self._mode = _AttentionCalls(self)
        self._active = False
        for path, module in denoiser.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                self._handles.append(module.register_forward_pre_hook(self._input_hook(path)))
            elif hasattr(module, "processor"):  # diffusers' Attention
                self._handles.append(module.register_forward_pre_hook(self._enter(path)))
                self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        # never past a denoiser call that raised inside an attention module
        self._handles.append(denoiser.register_forward_hook(self._stop, always_call=True))

    def spent(self, started: float) -> None:
        self._spent += time.perf_counter() - started

    def _stop(self, module=None, args=None, output=None) -> None:
        if self._active:
            self._mode.__exit__(None, None, None)
            self._active = False
        self.attention.clear()

    def _input_hook(self, path: str):
        key = input_key(path)

        def hook(module, args):
            started = time.perf_counter()
            if args:
                self.note(key, args[0])
            self.spent(started)
        return hook

    def _enter(self, path: str):
        def hook(module, args):
            started = time.perf_counter()
            self.attention.append(path)
            if not self._active:
                self._mode.__enter__()
                self._active = True
            self.spent(started)
        return hook

    def _leave(self, module, args, output):
        started = time.perf_counter()
        if self.attention:
            self.attention.pop()
        if not self.attention:
            self._stop()
        self.spent(started)

    def note(self, key: str, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            return
        if key in self._current:
            self._current[key] = AMBIGUOUS
            return
        low, high = torch.aminmax(tensor.detach())
        self._current[key] = (float(low), float(high))

    def take(self) -> dict[str, tuple[float, float] | None]:
        """The ranges recorded since the last take (one denoiser call's); ``spent_s`` becomes
        the seconds its hooks took meanwhile."""
        out, self._current = self._current, {}
        self.spent_s, self._spent = self._spent, 0.0
        return out

    def close(self) -> None:
        self._stop()
        for handle in self._handles:
            handle.remove()
        self._handles = []


def mean_ranges(keys: list[list[str | None]],
                calls: list[dict]) -> list[tuple[float, float]] | None:
    """Per tensor, the mean over ``calls`` of each call's minimum and maximum (the statistics
    pass's ranges), read from the first of its candidate ``keys`` every call recorded
    unambiguously; None when a tensor has none (the build then runs the statistics pass)."""
    if not calls:
        return None
    out = []
    for candidates in keys:
        key = next((k for k in candidates if k is not None
                    and all(call.get(k) is not None for call in calls)), None)
        if key is None:
            return None
        out.append((sum(call[key][0] for call in calls) / len(calls),
                    sum(call[key][1] for call in calls) / len(calls)))
    return out
