"""Step caching (DeepCache) on a UNet compiled by torch.compile (#16): CUDA's pick is
``torch_compile/fp16-cudagraphs``, one compiled graph whose blocks cannot be called one by one as
:mod:`.step_cache` does with an eager UNet, so step caching could not stack on it.

The UNet is split as DeepCache splits it (and as :mod:`.step_cache_openvino` splits an OpenVINO
graph), into two graphs compiled with the pick's own inductor options (CUDA graphs included) over
the pick's weights: the *full* UNet returning also the deep feature (the last up block's input),
and the *shallow* path (:func:`.step_cache.shallow_unet`) taking that feature as an input. The full
graph runs a view of the UNet whose last up block is wrapped to hand its input out; the pick's
own module and graph are left as they are (the search times the bare pick beside the stack).
"""

from __future__ import annotations

import copy

import torch

from ..backends.base import OptimizedModule
from ..backends.torch_module import sample_argument
from .base import StepCacheBase
from .eager import base_module, unet_config_reason


class _HandsOutInput(torch.nn.Module):
    """The last up block, which also keeps its input for the graph to return (the UNet's forward
    reads ``resnets`` and ``has_cross_attention`` from it, so it answers them too)."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block
        self.resnets = block.resnets
        if hasattr(block, "has_cross_attention"):
            self.has_cross_attention = block.has_cross_attention
        self.kept = None

    def forward(self, *args, **kwargs):
        self.kept = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        return self.block(*args, **kwargs)


class _FullWithFeature(torch.nn.Module):
    """The whole UNet; returns (noise prediction, deep feature)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        view = copy.copy(unet)  # the same weights and blocks, its own module table
        view.__dict__ = dict(unet.__dict__)
        view._modules = dict(unet._modules)
        ups = torch.nn.ModuleList(list(unet.up_blocks))
        self.hand_out = ups[-1] = _HandsOutInput(ups[-1])
        view._modules["up_blocks"] = ups
        self.unet = view

    def forward(self, **kwargs):
        out = self.unet(**kwargs)[0]
        return out, self.hand_out.kept


class _Shallow(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, timestep, ehs, cached, added_cond_kwargs=None):
        from .step_cache import shallow_unet

        return (shallow_unet(self.unet, x, timestep, ehs, cached, added_cond_kwargs),)


def _compiled_base(module: OptimizedModule):
    from ..backends.torch_compile import CompiledModule

    base = base_module(module)
    return base if isinstance(base, CompiledModule) else None


def runs_compiled(module: OptimizedModule) -> bool:
    return _compiled_base(module) is not None


def incompatible_reason(module: OptimizedModule) -> str | None:
    base = _compiled_base(module)
    if base is not module:
        return (f"{module.variant.id} is wrapped by another technique: step caching compiles "
                "the UNet's two paths itself")
    from diffusers import UNet2DConditionModel

    if not isinstance(base.unet, UNet2DConditionModel):
        return (f"{base.variant.id} compiles a {type(base.unet).__name__}: step caching of a "
                "compiled DiT is not implemented (it runs on the eager one)")
    return unet_config_reason(base.unet)


class CompiledStepCacheModule(StepCacheBase):
    def __init__(self, inner: OptimizedModule, interval: int):
        why = incompatible_reason(inner)
        base = _compiled_base(inner)
        super().__init__(inner, interval, None if why else base.unet, why)
        self._graphs = [base.compile_like(_FullWithFeature(base.unet)),
                        base.compile_like(_Shallow(base.unet))]  # a list: not submodules
        self.reset()

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        use_cache = self._begin_step(sample, timestep, encoder_hidden_states, extra)
        base = self.technique_inner
        kwargs = base.call_kwargs(sample, timestep, encoder_hidden_states, extra)
        full, shallow = self._graphs
        if use_cache:
            out, = base.run(shallow, kwargs[sample_argument(base.unet)], timestep,
                            kwargs["encoder_hidden_states"], self._cached,
                            kwargs.get("added_cond_kwargs"))
        else:
            out, self._cached = base.run(full, **kwargs)
        return out.to(sample.dtype).contiguous()
