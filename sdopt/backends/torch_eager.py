"""PyTorch eager: the fp32 reference, reduced-precision weights and the channels_last layout.

bf16 weights are the first-order win on CPUs with bf16 units (2.2x for the SD 1.5 UNet at 256 px
here); fp16 is only tried on CUDA, because CPUs without fp16 matmul units emulate it slowly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..device import DeviceInfo
from .torch_module import DTYPES, TorchUNetModule, copy_unet, load_weights_into_copy, save_weights
from .base import Backend, BuildContext, OptimizedModule, Variant, register


NAME = "torch_eager"


def reference_variant() -> Variant:
    """The original, unchanged: every candidate is verified and timed against it."""
    return Variant(backend=NAME, name="fp32", precision="fp32",
                   options={"channels_last": False}, lossless=True)


REFERENCE_ID = reference_variant().id


def reference_module(unet: torch.nn.Module) -> TorchUNetModule:
    """The pipeline's own UNet as a backend module, without a copy (what techniques are tried
    on alone, and what the reference row of the search runs)."""
    return TorchUNetModule(unet, reference_variant(), unet.dtype)


# CPU memory a build adds at its peak, in copies of the fp32 weights (Backend.memory_copies).
MEMORY_COPIES = {"bf16": 1.1, "bf16-channels_last": 1.1, "fp32-channels_last": 1.3}


@register
class TorchEager(Backend):
    name = NAME
    aliases = ("torch", "pytorch")

    def variants(self, device: DeviceInfo) -> list[Variant]:
        out = []
        for precision in ("fp32", "bf16", "fp16"):
            for channels_last in (False, True):
                suffix = "-channels_last" if channels_last else ""
                out.append(Variant(
                    backend=self.name, name=precision + suffix, precision=precision,
                    options={"channels_last": channels_last},
                    lossless=precision == "fp32",
                    techniques=tuple(t for t in (
                        f"{precision} weights" if precision != "fp32" else "",
                        "channels_last" if channels_last else "") if t),
                ))
        return out

    def memory_copies(self, variant: Variant, ctx: BuildContext | None = None) -> float | None:
        # A converted copy (the fp32 variant without channels_last is the original itself):
        # anonymous peaks 1.01-1.25 copies (benchmarks/candidate_memory.py, tiny UNet widened
        # to 800 MB, 2026-12-01).
        return MEMORY_COPIES.get(variant.name)

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if variant.precision == "bf16":
            return device.precision_unavailable_reason("bf16")
        if variant.precision == "fp16" and device.kind != "cuda":
            return "fp16 is only tried on CUDA: CPUs without fp16 matmul units emulate it slowly"
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        channels_last = bool(variant.options.get("channels_last"))
        dtype = DTYPES[variant.precision]
        param = next(unet.parameters())
        if dtype == param.dtype and not channels_last and param.device.type == ctx.device.torch_device:
            # The reference itself: no copy, so the original costs no extra memory.
            return TorchUNetModule(unet, variant, dtype)
        return TorchUNetModule(copy_unet(unet, dtype, channels_last, ctx.device.torch_device),
                               variant, dtype, channels_last)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        return save_weights(module.unet, directory)

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        channels_last = bool(variant.options.get("channels_last"))
        dtype = DTYPES[variant.precision]
        clone = load_weights_into_copy(directory, unet, dtype, channels_last, device.torch_device)
        return TorchUNetModule(clone, variant, dtype, channels_last)
