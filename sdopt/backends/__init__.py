"""Backend registry. Built-in backends register themselves on import; importing one must stay
cheap and must not import an optional dependency (they do that lazily, in ``build``)."""

from __future__ import annotations

import importlib

from .base import BACKENDS, Backend, BuildContext, OptimizedModule, UNetInputs, Variant, get_backend

# Every backend module shipped with sdopt, in the order the search tries them.
BUILTIN_MODULES = ("torch_eager", "torch_int8", "torch_compile", "openvino", "onnxruntime",
                   "tensorrt")

# Speedster compiler names we accept in ignore_compilers although sdopt has no such backend, so
# that code copied from Speedster's guides runs unchanged.
FOREIGN_COMPILERS = frozenset({"tvm", "deepsparse", "bladedisc", "torchscript", "torch_tensor_rt",
                               "torch_xla", "tflite", "tensorflow", "torch_neuron"})

_loaded = False


def load_builtin_backends() -> dict[str, Backend]:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{name}")
    return BACKENDS


__all__ = ["BACKENDS", "Backend", "BuildContext", "OptimizedModule", "UNetInputs", "Variant",
           "get_backend", "load_builtin_backends", "FOREIGN_COMPILERS"]
