"""The optimized UNet as the pipeline sees it, and the pipeline that carries it.

The pipeline keeps calling ``self.unet(latents, t, encoder_hidden_states=..., return_dict=False)``
and reading ``self.unet.config``; :class:`OptimizedUNet` answers both, so the object returned by
``optimize_model`` is a real diffusers pipeline, used exactly like the original.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import torch

from ..backends.base import OptimizedModule, Variant
from ..techniques import apply_pipeline_techniques, apply_unet_techniques

log = logging.getLogger(__name__)


class OptimizedUNet(torch.nn.Module):
    def __init__(self, module: OptimizedModule, config, *, dtype: torch.dtype, device: torch.device,
                 info: dict[str, Any] | None = None):
        super().__init__()
        self.module = module
        self._config = config
        self._dtype = dtype
        self._device = torch.device(device)
        self.info = info or {}

    @property
    def variant(self) -> Variant:
        return self.module.variant

    # What diffusers reads from a UNet.
    @property
    def config(self):
        return self._config

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, *args, **kwargs):
        # pipe.to(dtype) would silently undo the chosen precision: devices move, dtypes do not.
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and dtype != self._dtype:
            log.warning("sdopt: ignoring a dtype change of the optimized UNet (%s keeps %s)",
                        self.variant.id, self.variant.precision)
        if device is not None and torch.device(device) != self._device:
            self.module.to(device)
            self._device = torch.device(device)
        return self

    def forward(self, sample, timestep, encoder_hidden_states=None, *args, return_dict: bool = True,
                cross_attention_kwargs=None, **kwargs):
        if args:
            raise TypeError("sdopt's optimized UNet takes sample, timestep and "
                            "encoder_hidden_states positionally, the rest by keyword")
        if cross_attention_kwargs:
            raise NotImplementedError(
                f"cross_attention_kwargs ({', '.join(cross_attention_kwargs)}) were passed to the "
                f"optimized UNet ({self.variant.id}); fuse LoRA weights before optimizing instead")
        extra = {k: v for k, v in kwargs.items() if v is not None}
        out = self.module(sample, timestep, encoder_hidden_states, **extra)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


def with_unet(pipe, unet: torch.nn.Module):
    """A new pipeline sharing every component of ``pipe`` except the UNet (``pipe`` is untouched)."""
    components = dict(pipe.components)
    components["unet"] = unet
    params = inspect.signature(type(pipe).__init__).parameters
    if "requires_safety_checker" in params and "requires_safety_checker" in pipe.config:
        components["requires_safety_checker"] = pipe.config.requires_safety_checker
    try:
        new = type(pipe)(**{k: v for k, v in components.items() if k in params})
    except Exception:  # noqa: BLE001 - an exotic constructor: fall back to a shallow copy
        new = copy.copy(pipe)
        new.unet = unet
    new._progress_bar_config = dict(getattr(pipe, "_progress_bar_config", {}))
    return new


def optimized_unet_of(model) -> OptimizedUNet | None:
    unet = getattr(model, "unet", model)
    return unet if isinstance(unet, OptimizedUNet) else None


def assemble(model, module: OptimizedModule, specs: list[dict], device,
             info: dict | None = None):
    """A new pipeline (sharing the user's components) running ``module`` with the techniques of
    ``specs``; the user's pipeline and the backend module stay unchanged."""
    module = apply_unet_techniques(module, specs, model.unet) if specs else module
    wrapped = OptimizedUNet(module, model.unet.config, dtype=model.unet.dtype,
                            device=torch.device(device.torch_device), info=info or {})
    pipe = with_unet(model, wrapped)
    if specs:
        apply_pipeline_techniques(pipe, specs)
    return pipe
