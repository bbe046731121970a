"""What the UNet-level techniques need from a backend module: the diffusers UNet it runs, in
eager PyTorch, so that they can call its blocks one by one or swap its attention processors."""

from __future__ import annotations

import copy

import torch

from ..backends.base import OptimizedModule
from ..backends.torch_eager import TorchUNetModule


def eager_unet(module: OptimizedModule):
    """The diffusers UNet that ``module`` runs eagerly, or (None, why not)."""
    from diffusers import UNet2DConditionModel

    base = base_module(module)
    if not isinstance(base, TorchUNetModule):
        return None, f"{base.variant.id} does not run the diffusers UNet in eager PyTorch"
    if not base.runs_eager:
        return None, f"{base.variant.id} runs a compiled graph, whose blocks cannot be called alone"
    unet = base.unet
    if not isinstance(unet, UNet2DConditionModel):
        return None, f"{base.variant.id} holds a {type(unet).__name__}, not a UNet2DConditionModel"
    cfg = unet.config
    # SDXL's "text_time" added embedding is recomputed by step caching's shallow path (and
    # token merging does not touch embeddings); the other kinds are not.
    if unet.class_embedding is not None or cfg.addition_embed_type not in (None, "text_time") \
            or cfg.center_input_sample or unet.encoder_hid_proj is not None:
        return None, ("the UNet uses class embeddings, an image projection or added embeddings "
                      f"of type '{cfg.addition_embed_type}', which these techniques do not handle")
    return unet, None


def base_module(module: OptimizedModule) -> OptimizedModule:
    """The backend's own module under any technique wrappers (what the backend saves)."""
    while hasattr(module, "technique_inner"):
        module = module.technique_inner
    return module


def private_copy(module: OptimizedModule, original_unet: torch.nn.Module) -> OptimizedModule:
    """A module whose UNet may be patched: the fp32 reference shares the user's UNet, so it is
    copied first (the user's pipeline must stay untouched)."""
    if getattr(module, "unet", None) is not original_unet:
        return module
    clone = copy.deepcopy(original_unet).eval()
    clone.requires_grad_(False)
    return TorchUNetModule(clone, module.variant, module.run_dtype, module.channels_last)
