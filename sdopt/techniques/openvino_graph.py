"""What the OpenVINO pipeline-component techniques share (the VAE decoder, the text encoders):
one conversion per torch module and process, and a graph compiled lazily per input shape.

The UNet backend's (:mod:`sdopt.backends.openvino`) ``convert_torch`` converts them and its
``CompiledPerShape`` compiles them with the ``INFERENCE_PRECISION_HINT`` of the precision (``f32``
or ``bf16``; the IR keeps fp32 weights, so one conversion serves both). A converted
model keeps dynamic dimensions (batch, latent height and width) and is compiled for each static
shape it is called with, which OpenVINO runs faster than a dynamic compile; a search evaluating
the same component several times (alone, stacked, the final pipeline) converts it once: the
conversion is remembered per source module, weakly, for the life of the process. Nothing is
written to disk: a loaded model re-applies the technique and converts again.
"""

from __future__ import annotations

import copy
import weakref
from typing import Callable

import torch

HINTS = {"fp32": "f32", "bf16": "bf16"}

# source torch module -> {conversion key: openvino.Model}; weak, so that a dropped pipeline's
# components are not kept alive by a conversion (the IR does not share their weights).
_CONVERTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def converted(source: torch.nn.Module, key: str, make: Callable[[], tuple[torch.nn.Module, dict]]):
    """The ``openvino.Model`` converted from ``make()`` (the module to trace, and the
    ``convert_model`` keyword arguments), once per ``source`` module and ``key``."""
    from ..backends.openvino import convert_torch

    cache = _CONVERTED.setdefault(source, {})
    if key not in cache:
        module, kwargs = make()
        if any(p.dtype != torch.float32 for p in module.parameters()):
            module = copy.deepcopy(module).float()  # fp32 IR; the hint sets the precision
        # share_weights=False: the IR owns its weights, independent of the torch module's.
        cache[key] = convert_torch(module, kwargs.pop("example_input"), share_weights=False,
                                   **kwargs)
        CONVERSIONS[key.split(":")[0]] = CONVERSIONS.get(key.split(":")[0], 0) + 1
    return cache[key]


# Conversions this process really ran, per component kind: tests assert reuse by counting.
CONVERSIONS: dict[str, int] = {}


class CompiledGraph:
    """A converted component compiled per input shapes at one precision
    (:class:`~sdopt.backends.openvino.CompiledPerShape`), called with torch tensors."""

    def __init__(self, model, precision: str):
        # Imported here: importing the backend module registers it, out of the registry's order.
        from ..backends.openvino import CompiledPerShape

        self.precision = precision
        self._graph = CompiledPerShape(model, HINTS[precision])

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Run on CPU tensors (given in the model's input order); the outputs as torch tensors
        in the model's output order."""
        request = self._graph.infer([t.detach().cpu().numpy() for t in tensors])
        return [torch.from_numpy(request.get_output_tensor(i).data.copy())
                for i in range(len(self._graph.model.outputs))]


def unavailable_reason(device, purpose: str) -> str | None:
    """Why ``purpose`` (an OpenVINO component technique) cannot run on ``device``."""
    from .. import deps

    if getattr(device, "kind", "cpu") != "cpu":
        return (f"sdopt runs OpenVINO on CPU only; the device is {device.kind} "
                "(OpenVINO's GPU plugin is for Intel GPUs)")
    return deps.unavailable_reason("openvino", purpose)


def setting_reason(params: dict, device) -> str | None:
    """bf16 needs the CPU's bf16 units; fp32 is the setting for CPUs without them (where they
    exist, the bf16 setting is tried instead)."""
    if params.get("precision") == "bf16":
        return device.precision_unavailable_reason("bf16")
    if device.precision_unavailable_reason("bf16") is None:
        return "this CPU has bf16 units: the bf16 setting is tried instead"
    return None
