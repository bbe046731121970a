"""torch.compile (inductor) of the UNet, fp32 and reduced precision, and on CUDA the fast recipes.

On CPU, inductor only pays with weight freezing (constant-folded, prepacked oneDNN weights):
measured for the SD 1.5 UNet at 256 px, 0.81x without it, 1.19x with it in fp32 and 2.22x in
bf16. On CUDA the default mode left the SD 1.5 UNet at 13.3 ms per call on an H200 (13% of the
chip's bf16 peak): most of the rest is kernel launches and unfused layouts, which diffusers'
fast-diffusion recipe (channels_last, fused QKV projections, max-autotune with its inductor flags)
and CUDA graphs remove. Those are the ``fp16-cudagraphs`` (cheap to compile) and
``fp16-max-autotune`` (the recipe, minutes to compile) variants; ``fp8-cudagraphs`` runs the
transformer blocks' linear layers as fp8 GEMMs (:mod:`.fp8_linear`, Ada/Hopper) on the first.

A compiled graph has no portable safe format: torch serialises its compile cache with pickle,
which sdopt never loads from a model directory (a saved model may come from anywhere). So a saved
model keeps the weights (safetensors) and compiles again on the first call after load_model
(about 85 s for SD 1.5 on 2 CPU cores); inductor's own on-disk cache (TORCHINDUCTOR_CACHE_DIR) makes
that fast on a machine that compiled the same graph before.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import deps
from ..device import DeviceInfo
from ..errors import SdoptError
from .torch_module import DTYPES, TorchUNetModule, copy_unet, load_weights_into_copy, save_weights
from .base import Backend, BuildContext, OptimizedModule, Variant, register


# diffusers' upsampling calls an lru_cache'd version check that dynamo traces through; the
# warning (with a source excerpt) is noise in the search output.
warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools.lru_cache`")

# diffusers' fast-diffusion recipe (docs: tutorials/fast_diffusion), the inductor flags it sets
# for UNets: 1x1 convolutions as matmuls, coordinate-descent tuning of the generated kernels, no
# epilogue fusion (it blocks the autotuned GEMM templates).
RECIPE_FLAGS = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True,
                "epilogue_fusion": False, "coordinate_descent_check_all_directions": True}
# Inductor options per CUDA mode; "" is inductor's default.
CUDA_MODES: dict[str, dict[str, Any]] = {
    "": {},
    "cudagraphs": {"triton.cudagraphs": True},
    "max-autotune": {"max_autotune": True, "triton.cudagraphs": True, **RECIPE_FLAGS},
}


def inductor_options(device_kind: str, mode: str) -> dict[str, Any]:
    if device_kind == "cpu":
        return {"freezing": True}
    return dict(CUDA_MODES[mode])


def fuse_qkv(unet: torch.nn.Module) -> bool:
    """One GEMM for the query, key and value projections (diffusers' ``fuse_qkv_projections``);
    False where the denoiser has no such method."""
    fuse = getattr(unet, "fuse_qkv_projections", None)
    if fuse is None:
        return False
    fuse()
    return True


# Parameters the fused projections add beside the originals: never saved, so a saved model loads
# into an unfused copy of the pipeline's UNet and is fused again.
_FUSED_KEYS = (".to_qkv.", ".to_kv.", ".to_added_qkv.")


class CompiledModule(TorchUNetModule):
    """The UNet through torch.compile: one graph, so its blocks cannot be called alone."""

    runs_eager = False

    def __init__(self, unet: torch.nn.Module, variant: Variant, dtype: torch.dtype,
                 channels_last: bool, device_kind: str):
        super().__init__(unet, variant, dtype, channels_last)
        self.options = inductor_options(device_kind, variant.options.get("mode", ""))
        self.fullgraph = bool(variant.options.get("fullgraph"))
        # Kept beside, not instead of, the module: save_model needs the plain weights.
        object.__setattr__(self, "_compiled", self.compile_like(unet))

    @property
    def cudagraphs(self) -> bool:
        return bool(self.options.get("triton.cudagraphs"))

    def compile_like(self, module: torch.nn.Module):
        """``module`` compiled as this module's graph is (step caching compiles its two paths
        over the same weights so)."""
        return torch.compile(module, options=self.options, dynamic=False,
                             fullgraph=self.fullgraph)

    def run(self, compiled, *args, **kwargs) -> tuple:
        """Call a graph :meth:`compile_like` made. CUDA graph outputs live in buffers the next
        replay overwrites: a new step begins here, and the caller (a scheduler, a step cache
        keeping features) gets its own copy."""
        if not self.cudagraphs:
            return compiled(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)

    def _call_unet(self, *args, **kwargs):
        return self.run(self._compiled, *args, **kwargs)

    def saved_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.unet.state_dict().items()
                if not any(f in k for f in _FUSED_KEYS)}


def run_dtype(variant: Variant) -> torch.dtype:
    """What the module computes in outside fp8 layers: the precision, or ``options["dtype"]``
    for fp8 (its rowwise GEMM returns bf16)."""
    return DTYPES[variant.options.get("dtype", variant.precision)]


def _fp8_layers(variant: Variant, dtype: torch.dtype):
    """What makes a copy of the denoiser the fp8 variant's (before its saved weights load)."""
    from .fp8_linear import to_fp8_linears

    def prepare(module: torch.nn.Module) -> None:
        if not to_fp8_linears(module, dtype):
            raise SdoptError(f"{type(module).__name__} has no transformer-block linear layer: "
                             f"{variant.id} would be its {dtype} variant")
    return prepare


def _clone(unet: torch.nn.Module, variant: Variant, device: DeviceInfo,
           directory: Path | None = None) -> torch.nn.Module:
    dtype = run_dtype(variant)
    channels_last = bool(variant.options.get("channels_last"))
    prepare = _fp8_layers(variant, dtype) if variant.options.get("fp8_linear") else None
    if directory is not None:
        clone = load_weights_into_copy(directory, unet, dtype, channels_last,
                                       device.torch_device, prepare=prepare)
    else:
        clone = copy_unet(unet, dtype, channels_last, device.torch_device)
        if prepare is not None:
            prepare(clone)
    if variant.options.get("fuse_qkv"):
        fuse_qkv(clone)
    return clone


@register
class TorchCompile(Backend):
    name = "torch_compile"
    aliases = ("inductor", "torch.compile")

    def build_activity(self, variant: Variant) -> str:
        if variant.options.get("mode") == "max-autotune":
            return "compiling (torch.compile max-autotune: benchmarks kernel choices, minutes)"
        return "compiling (torch.compile; the first call compiles, often minutes)"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        precisions = ("fp32", "bf16") + (("fp16",) if device.kind == "cuda" else ())
        freezing = ("freezing",) if device.kind == "cpu" else ()
        out = [Variant(backend=self.name, name=p, precision=p, options={},
                       lossless=p == "fp32",
                       techniques=("inductor",) + freezing + ((f"{p} weights",) if p != "fp32" else ()))
               for p in precisions]
        if device.kind == "cuda":
            recipe = {"channels_last": True, "fuse_qkv": True, "fullgraph": True}
            for mode in ("cudagraphs", "max-autotune"):
                out.append(Variant(
                    backend=self.name, name=f"fp16-{mode}", precision="fp16",
                    options={**recipe, "mode": mode},
                    techniques=("inductor", "fp16 weights", "channels_last", "fused QKV",
                                "CUDA graphs") + (("max-autotune",) if mode == "max-autotune"
                                                  else ())))
            # fp8 GEMMs for the transformer blocks' linear layers (fp8_linear), bf16 elsewhere,
            # in the cheap-to-compile CUDA-graphs recipe. QKV stays unfused: the saved e4m3
            # weights are the layers the pipeline's denoiser has.
            out.append(Variant(
                backend=self.name, name="fp8-cudagraphs", precision="fp8",
                options={"channels_last": True, "fullgraph": True, "mode": "cudagraphs",
                         "dtype": "bf16", "fp8_linear": True},
                techniques=("inductor", "fp8 (e4m3) linear layers in the transformer blocks, "
                            "rowwise scales", "bf16 elsewhere", "channels_last", "CUDA graphs")))
        return out

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if device.kind == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return "inductor on CPU needs a C++ compiler (g++), which is not on PATH"
        if device.kind == "cuda":
            reason = deps.unavailable_reason("triton", "inductor on CUDA")
            if reason:
                return reason
        if variant.precision in ("bf16", "fp8"):
            return device.precision_unavailable_reason(variant.precision)
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        clone = _clone(unet, variant, ctx.device)
        return CompiledModule(clone, variant, run_dtype(variant),
                              bool(variant.options.get("channels_last")), ctx.device.kind)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        return {**save_weights(module.unet, directory, state=module.saved_state()),
                "rebuild_on_load": "torch.compile"}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        clone = _clone(unet, variant, device, directory)
        return CompiledModule(clone, variant, run_dtype(variant),
                              bool(variant.options.get("channels_last")), device.kind)
