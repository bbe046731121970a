"""What the OpenVINO pipeline-component techniques share (the VAE decoder, the text encoders):
one conversion per torch module and process, and a graph compiled lazily per input shape.

The UNet backend's (:mod:`sdopt.backends.openvino`) ``convert_torch`` converts them and its
``CompiledPerShape`` compiles them with the ``INFERENCE_PRECISION_HINT`` of the precision (``f32``
or ``bf16``; the IR keeps fp32 weights, so one conversion serves both). A converted
model keeps dynamic dimensions (batch, latent height and width) and is compiled for each static
shape it is called with, which OpenVINO runs faster than a dynamic compile; a search evaluating
the same component several times (alone, stacked, the final pipeline) converts it once: the
conversion is remembered per source module, weakly, for the life of the process.

The converted IR (``.xml``/``.bin``, no pickle) is also kept in sdopt's cache
(:func:`sdopt.cache.fetch_or_build`, kind ``openvino-component-ir``), keyed like the UNet's IR
(:class:`sdopt.backends.openvino.FP32IR`): the traced module's weights hash, the component's
config, the traced input shapes and dtypes, the converter's arguments, the OpenVINO / torch /
diffusers / transformers versions and the IR precision (fp32). Another process (a second search,
every ``load_model`` of a saved pipeline) reads the IR instead of converting again. A converted
model is always the one read back from the cache, so a miss and a hit run the same graph.
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


def converted(source: torch.nn.Module, key: str, make: Callable[[], tuple[torch.nn.Module, dict]],
              config=None):
    """The ``openvino.Model`` converted from ``make()`` (the module to trace, and the
    ``convert_model`` keyword arguments), once per ``source`` module and ``key`` in a process,
    and read from sdopt's cache when another process converted the same module (``config``: the
    component's config, part of the cache key)."""
    cache = _CONVERTED.setdefault(source, {})
    if key not in cache:
        import openvino as ov

        from ..cache import fetch_or_build

        module, kwargs = make()
        if any(p.dtype != torch.float32 for p in module.parameters()):
            module = copy.deepcopy(module).float()  # fp32 IR; the hint sets the precision
        parts = ir_key_parts(module, key, kwargs, config)
        entry = fetch_or_build(CACHE_KIND, parts, lambda tmp: _convert(module, key, kwargs, tmp))
        cache[key] = ov.Core().read_model(str(entry.path / IR_XML))
    return cache[key]


CACHE_KIND = "openvino-component-ir"
IR_XML, IR_BIN = "model.xml", "model.bin"
# Bump when what is traced or how it is converted changes under the same module and arguments.
RECIPE = 1


def _config_dict(config) -> dict:
    """A diffusers config (a dict) or a transformers one (``to_dict``), without the private
    bookkeeping that does not change the model (names, library versions)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in raw.items()
            if not k.startswith("_") and k not in ("transformers_version", "name_or_path")}


def _describe(value):
    """Shapes and dtypes of example inputs, the text of OpenVINO shapes and types."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    return str(value)


def ir_key_parts(module: torch.nn.Module, key: str, kwargs: dict, config=None) -> dict:
    """What identifies a component's converted IR (as ``backends.export.unet_key_parts`` with
    ``FP32IR``'s additions does for the UNet's)."""
    import hashlib
    import json

    import openvino as ov

    from ..device import library_versions
    from ..identity import weights_hash

    versions = library_versions()
    parts = {"component": key, "module": f"{type(module).__module__}.{type(module).__qualname__}",
             "weights": weights_hash(module), "inputs": _describe(dict(kwargs)),
             "openvino": ov.get_version(), "precision": "fp32", "recipe": RECIPE,
             "libraries": {k: versions.get(k) for k in ("torch", "diffusers", "transformers")}}
    if config is not None:
        blob = json.dumps(_config_dict(config), sort_keys=True, default=str).encode()
        parts["config"] = hashlib.sha256(blob).hexdigest()[:16]
    return parts


def _convert(module: torch.nn.Module, key: str, kwargs: dict, directory) -> dict:
    import openvino as ov

    from ..backends.openvino import convert_torch

    from ..logs import quiet_transformers_modeling

    kwargs = dict(kwargs)
    # The converted model shares the torch module's weights: it is only written here (the
    # pipeline's graph is read back from the files), and copying them took 2 s of the sd15 text
    # encoder's 10 s conversion. The tracer reads every attribute of a text encoder, and
    # transformers' loss_function property then notes "`loss_type=None` ... is unrecognized":
    # a training matter, silenced here.
    with quiet_transformers_modeling():
        model = convert_torch(module, kwargs.pop("example_input"), **kwargs)
    # fp32 weights: compress_to_fp16 would make the fp32 setting lossy.
    ov.save_model(model, str(directory / IR_XML), compress_to_fp16=False)
    kind = key.split(":")[0]
    CONVERSIONS[kind] = CONVERSIONS.get(kind, 0) + 1
    return {"converter": "openvino.convert_model", "openvino": ov.get_version(),
            "inputs": len(model.inputs), "outputs": len(model.outputs)}


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
