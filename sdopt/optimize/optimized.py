"""The optimized UNet as the pipeline sees it, and the pipeline that carries it.

The pipeline keeps calling ``self.unet(latents, t, encoder_hidden_states=..., return_dict=False)``
and reading ``self.unet.config``, ``.dtype``, ``.device``, and, depending on the family, the
original's modules (SDXL reads ``unet.add_embedding.linear_1.in_features`` on every call, IP
adapters ``unet.encoder_hid_proj``). :class:`OptimizedUNet` answers the call and those three, and
forwards every other attribute read to the module it was made from, so the object returned by
``optimize_model`` is a real diffusers pipeline, used exactly like the original.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import torch

from ..backends.base import OptimizedModule, Variant
from ..models import denoiser_name, denoiser_of
from ..techniques import apply_pipeline_techniques, apply_unet_techniques

log = logging.getLogger(__name__)


class OptimizedUNet(torch.nn.Module):
    """``source``: the module attribute reads fall back to. Not a submodule (``.to()``,
    ``state_dict()`` and the pipeline's memory accounting never see it twice): the user's own UNet
    during a search (their pipeline holds it anyway), a weightless copy after load_model."""

    def __init__(self, module: OptimizedModule, config, *, dtype: torch.dtype, device: torch.device,
                 info: dict[str, Any] | None = None, source: torch.nn.Module | None = None):
        super().__init__()
        self.module = module
        self._config = config
        self._dtype = dtype
        self._device = torch.device(device)
        self.info = info or {}
        object.__setattr__(self, "_source", source)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            source = self.__dict__.get("_source")
            # Dunder lookups (copy, pickle) must not reach the source: they describe this object.
            if source is None or name.startswith("__"):
                raise
            try:
                return getattr(source, name)
            except AttributeError:
                raise AttributeError(f"'{type(self).__name__}' object has no attribute "
                                     f"'{name}' (nor has the {type(source).__name__} it was "
                                     "optimized from)") from None

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

    def forward(self, *args, return_dict: bool = True, cross_attention_kwargs=None,
                joint_attention_kwargs=None, **kwargs):
        # UNets are called (sample, timestep, encoder_hidden_states=...), the DiT transformers
        # entirely by keyword with ``hidden_states`` for the latent.
        if len(args) > 3:
            raise TypeError("sdopt's optimized denoiser takes at most sample, timestep and "
                            "encoder_hidden_states positionally, the rest by keyword")
        transformer = "hidden_states" in kwargs
        if transformer:
            kwargs["sample"] = kwargs.pop("hidden_states")
        values = dict(zip(("sample", "timestep", "encoder_hidden_states"), args))
        for name in ("sample", "timestep", "encoder_hidden_states"):
            if name in kwargs:
                if name in values:
                    raise TypeError(f"got multiple values for argument '{name}'")
                values[name] = kwargs.pop(name)
        attention = cross_attention_kwargs or joint_attention_kwargs
        if attention:
            raise NotImplementedError(
                f"attention kwargs ({', '.join(attention)}) were passed to the optimized "
                f"denoiser ({self.variant.id}); fuse LoRA weights before optimizing instead")
        extra = {k: v for k, v in kwargs.items() if v is not None}
        out = self.module(values["sample"], values["timestep"],
                          values.get("encoder_hidden_states"), **extra)
        if return_dict:
            if transformer:
                from diffusers.models.modeling_outputs import Transformer2DModelOutput

                return Transformer2DModelOutput(sample=out)
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


def with_unet(pipe, unet: torch.nn.Module):
    """A new pipeline sharing every component of ``pipe`` except the UNet (``pipe`` is untouched)."""
    name = denoiser_name(pipe)
    components = dict(pipe.components)
    components[name] = unet
    params = inspect.signature(type(pipe).__init__).parameters
    # Constructor flags the pipeline registered (requires_safety_checker, SDXL's
    # force_zeros_for_empty_prompt): the copy must make the same images.
    for key in params:
        if key not in components and key in pipe.config and not key.startswith("_"):
            components[key] = pipe.config[key]
    if "add_watermarker" in params:
        # Not registered in the config: a default would add a watermark where the original
        # has none (or the reverse); the instance is copied below.
        components["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    try:
        new = type(pipe)(**{k: v for k, v in components.items() if k in params})
    except Exception:  # noqa: BLE001 - an exotic constructor: fall back to a shallow copy
        new = copy.copy(pipe)
        setattr(new, name, unet)
    if hasattr(pipe, "watermark"):
        new.watermark = pipe.watermark
    new._progress_bar_config = dict(getattr(pipe, "_progress_bar_config", {}))
    return new


def optimized_unet_of(model) -> OptimizedUNet | None:
    """The optimized denoiser ``model`` (a pipeline, or the denoiser itself) holds, if any."""
    if isinstance(model, OptimizedUNet):
        return model
    denoiser = denoiser_of(model)
    return denoiser if isinstance(denoiser, OptimizedUNet) else None


def assemble(model, module: OptimizedModule, specs: list[dict], device,
             info: dict | None = None):
    """A new pipeline (sharing the user's components) running ``module`` with the techniques of
    ``specs``; the user's pipeline and the backend module stay unchanged."""
    original = denoiser_of(model)
    module = apply_unet_techniques(module, specs, original) if specs else module
    wrapped = OptimizedUNet(module, original.config, dtype=original.dtype,
                            device=torch.device(device.torch_device), info=info or {},
                            source=original)
    pipe = with_unet(model, wrapped)
    if specs:
        apply_pipeline_techniques(pipe, specs)
    return pipe


def weightless(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module``'s structure with no weights (meta tensors), for answering attribute
    reads after load_model: keeping the replaced original would keep its fp32 weights (10 GB for
    SDXL) alive for nothing. Falls back to the module itself when its class cannot be rebuilt
    from its config."""
    from ..logs import quiet_diffusers

    try:
        with torch.device("meta"), quiet_diffusers():
            shell = type(module).from_config(module.config)
        return shell.eval().requires_grad_(False)
    except Exception:  # noqa: BLE001 - not a diffusers model: keep the original
        log.debug("sdopt: no weightless copy of %s; keeping it", type(module).__name__)
        return module


def install(pipe, module: OptimizedModule, original: torch.nn.Module, device,
            info: dict) -> OptimizedUNet:
    """Put ``module`` into ``pipe`` where ``original`` was (``unet`` or ``transformer``), for
    load_model."""
    wrapped = OptimizedUNet(module, original.config, dtype=original.dtype,
                            device=torch.device(device.torch_device), info=info,
                            source=weightless(original))
    setattr(pipe, denoiser_name(pipe), wrapped)
    return wrapped


# The same class serves UNets and DiT transformers.
OptimizedDenoiser = OptimizedUNet
