"""What the UNet-level techniques need from a backend module: the diffusers UNet it runs, in
eager PyTorch, so that they can call its blocks one by one or swap its attention processors."""

from __future__ import annotations

import copy
import itertools

import torch

from ..backends.base import OptimizedModule
from ..backends.torch_eager import TorchUNetModule


def eager_unet(module: OptimizedModule):
    """The diffusers UNet that ``module`` runs eagerly, or (None, why not)."""
    from diffusers import UNet2DConditionModel

    base = base_module(module)
    if not isinstance(base, TorchUNetModule):
        return None, (f"{base.variant.id} does not run the diffusers denoiser (UNet or "
                      "transformer) in eager PyTorch")
    if not base.runs_eager:
        return None, f"{base.variant.id} runs a compiled graph, whose blocks cannot be called alone"
    unet = base.unet
    if not isinstance(unet, UNet2DConditionModel):
        return None, f"{base.variant.id} holds a {type(unet).__name__}, not a UNet2DConditionModel"
    why = unet_config_reason(unet)
    return (None, why) if why else (unet, None)


def unet_config_reason(unet) -> str | None:
    """Why the UNet techniques cannot handle this diffusers UNet's conditioning (None: they
    can). SDXL's "text_time" added embedding is recomputed by step caching's shallow path (and
    token merging does not touch embeddings); the other kinds are not."""
    cfg = unet.config
    if unet.class_embedding is not None or cfg.addition_embed_type not in (None, "text_time") \
            or cfg.center_input_sample or unet.encoder_hid_proj is not None:
        return ("the UNet uses class embeddings, an image projection or added embeddings "
                f"of type '{cfg.addition_embed_type}', which these techniques do not handle")
    return None


# The DiT families' transformer block lists (SD3 and PixArt: transformer_blocks; Flux also
# single_transformer_blocks, after the double-stream ones).
DIT_BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def eager_dit(module: OptimizedModule):
    """The diffusers DiT transformer (SD3, Flux, PixArt) that ``module`` runs eagerly, or
    (None, why not)."""
    base = base_module(module)
    if not isinstance(base, TorchUNetModule):
        return None, f"{base.variant.id} does not run the diffusers transformer in eager PyTorch"
    if not base.runs_eager:
        return None, f"{base.variant.id} runs a compiled graph, whose blocks cannot be called alone"
    model = base.unet
    if not dit_blocks(model):
        return None, (f"{base.variant.id} holds a {type(model).__name__}, which has no "
                      "transformer_blocks")
    return model, None


def dit_blocks(model) -> list[torch.nn.Module]:
    """Every transformer block of a DiT, in the order its forward runs them."""
    blocks: list[torch.nn.Module] = []
    for name in DIT_BLOCK_LISTS:
        blocks += list(getattr(model, name, None) or [])
    return blocks


def base_module(module: OptimizedModule) -> OptimizedModule:
    """The backend's own module under any technique wrappers (what the backend saves)."""
    while hasattr(module, "technique_inner"):
        module = module.technique_inner
    return module


def private_copy(module: OptimizedModule, original_unet: torch.nn.Module) -> OptimizedModule:
    """A copy of ``module`` whose attention processors may be swapped: every module object is
    new, every weight is shared (no memory for them). The fp32 reference holds the user's UNet,
    and the other candidates of a search share a backend module: patching either in place would
    leave the patch in the user's pipeline, or in candidates that were not meant to carry it."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    clone = copy.deepcopy(module, shared)
    clone.eval()
    return clone
