"""torch.compile (inductor) of the UNet, fp32 and reduced precision.

On CPU, inductor only pays with weight freezing (constant-folded, prepacked oneDNN weights):
measured for the SD 1.5 UNet at 256 px, 0.81x without it, 1.19x with it in fp32 and 2.22x in
bf16. A compiled graph has no portable safe format, so a saved model keeps the weights
(safetensors) and compiles again on the first call after load_model (about 85 s for SD 1.5 on
2 CPU cores).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import deps
from ..device import DeviceInfo
from .torch_module import DTYPES, TorchUNetModule, copy_unet, load_weights_into_copy, save_weights
from .base import Backend, BuildContext, OptimizedModule, Variant, register


# diffusers' upsampling calls an lru_cache'd version check that dynamo traces through; the
# warning (with a source excerpt) is noise in the search output.
warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools.lru_cache`")


class CompiledModule(TorchUNetModule):
    """The UNet through torch.compile: one graph, so its blocks cannot be called alone."""

    runs_eager = False

    def __init__(self, unet: torch.nn.Module, variant: Variant, dtype: torch.dtype,
                 channels_last: bool, device_kind: str):
        super().__init__(unet, variant, dtype, channels_last)
        options = {"freezing": True} if device_kind == "cpu" else {}
        # Kept beside, not instead of, the module: save_model needs the plain weights.
        object.__setattr__(self, "_compiled", torch.compile(unet, options=options, dynamic=False))

    def _call_unet(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)


@register
class TorchCompile(Backend):
    name = "torch_compile"
    aliases = ("inductor", "torch.compile")

    def build_activity(self, variant: Variant) -> str:
        return "compiling (torch.compile; the first call compiles, often minutes)"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        precisions = ("fp32", "bf16") + (("fp16",) if device.kind == "cuda" else ())
        freezing = ("freezing",) if device.kind == "cpu" else ()
        return [Variant(backend=self.name, name=p, precision=p, options={},
                        lossless=p == "fp32",
                        techniques=("inductor",) + freezing + ((f"{p} weights",) if p != "fp32" else ()))
                for p in precisions]

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if device.kind == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return "inductor on CPU needs a C++ compiler (g++), which is not on PATH"
        if device.kind == "cuda":
            reason = deps.unavailable_reason("triton", "inductor on CUDA")
            if reason:
                return reason
        if variant.precision == "bf16":
            return device.precision_unavailable_reason("bf16")
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        clone = copy_unet(unet, DTYPES[variant.precision], False, ctx.device.torch_device)
        return CompiledModule(clone, variant, DTYPES[variant.precision], False, ctx.device.kind)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        return {**save_weights(module.unet, directory), "rebuild_on_load": "torch.compile"}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        dtype = DTYPES[variant.precision]
        clone = load_weights_into_copy(directory, unet, dtype, False, device.torch_device)
        return CompiledModule(clone, variant, dtype, False, device.kind)
