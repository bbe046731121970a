"""What the PyTorch-family backends share: a UNet copy in some precision and layout, and its
weights saved as safetensors (never pickle)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..errors import SdoptError
from ..logs import quiet_diffusers
from .base import OptimizedModule, Variant

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS_FILE = "unet.safetensors"


class TorchUNetModule(OptimizedModule):
    """A UNet run in ``dtype`` and ``memory_format``; inputs are cast in, the output cast back.

    ``runs_eager``: the diffusers UNet's blocks run one by one in eager PyTorch, so techniques
    may call or patch them (a subclass that runs a compiled graph sets it False)."""

    runs_eager = True

    def __init__(self, unet: torch.nn.Module, variant: Variant, dtype: torch.dtype,
                 channels_last: bool = False):
        super().__init__()
        self.unet = unet
        self.variant = variant
        self.run_dtype = dtype
        self.channels_last = channels_last

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        out = self._call_unet(**self.call_kwargs(sample, timestep, encoder_hidden_states,
                                                 extra))[0]
        return out.to(sample.dtype).contiguous()

    def call_kwargs(self, sample, timestep, encoder_hidden_states, extra) -> dict:
        """The denoiser's keyword arguments for this call, in the run dtype and layout."""
        sample = sample.to(self.run_dtype)
        if self.channels_last and sample.dim() == 4:  # Flux's latents are packed tokens (3-D)
            sample = sample.contiguous(memory_format=torch.channels_last)
        return {sample_argument(self.unet): sample, "timestep": timestep,
                "encoder_hidden_states": encoder_hidden_states.to(self.run_dtype),
                "return_dict": False,
                **{k: _cast_extra(k, v, self.run_dtype) for k, v in extra.items()}}

    def _call_unet(self, *args, **kwargs):
        return self.unet(*args, **kwargs)


def sample_argument(denoiser: torch.nn.Module) -> str:
    """The name of the denoiser's latent input: ``sample`` for UNets, ``hidden_states`` for the
    DiT transformers, whose second positional argument is not the timestep (Flux's is the text
    embedding), so every call passes its inputs by name."""
    import inspect

    return next(iter(inspect.signature(denoiser.forward).parameters), "sample")


def _cast_extra(name: str, value, dtype: torch.dtype):
    """Extra inputs in the run dtype, except position ids (Flux's ``img_ids``: bf16 holds
    integers exactly only up to 256) and nested dicts (SDXL's ``added_cond_kwargs``: the UNet
    casts its added embedding itself, after computing the time-id embedding in fp32)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and \
            not name.endswith("_ids"):
        return value.to(dtype)
    return value


def copy_unet(unet: torch.nn.Module, dtype: torch.dtype, channels_last: bool,
              device: str) -> torch.nn.Module:
    """A converted copy: the pipeline's own UNet stays the fp32 reference."""
    with quiet_diffusers():  # its "keep modules in float32" note is about training
        clone = copy.deepcopy(unet).to(device=device, dtype=dtype).eval()
    clone.requires_grad_(False)
    if channels_last:
        clone = clone.to(memory_format=torch.channels_last)
    return clone


def save_weights(unet: torch.nn.Module, directory: Path,
                 state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """``state``: the tensors to keep, when not the whole state dict (fused projections that are
    rebuilt on load)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu()
             for k, v in (unet.state_dict() if state is None else state).items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    return {"weights": WEIGHTS_FILE}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise SdoptError(f"'{path}' is missing: the saved model is incomplete")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise SdoptError(f"'{path}' is corrupt: {exc}") from exc


def load_weights_into_copy(directory: Path, unet: torch.nn.Module, dtype: torch.dtype,
                           channels_last: bool, device: str,
                           prepare=None) -> torch.nn.Module:
    """Copy the given UNet's structure and fill it with the saved weights; ``prepare`` changes
    the copy's structure first as the build did (fp8 layers whose saved weights are e4m3)."""
    path = directory / WEIGHTS_FILE
    state = read_safetensors(path)
    clone = copy_unet(unet, dtype, channels_last, device)
    if prepare is not None:
        prepare(clone)
    missing, unexpected = clone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SdoptError(f"'{path}' does not fit the given pipeline's UNet ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected tensors): pass the pipeline the model was "
                         "optimized from")
    return clone
