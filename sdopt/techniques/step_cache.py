"""Step caching (DeepCache, Ma et al. 2023): reuse the UNet's deep features between neighbouring
denoising steps. DiT denoisers (SD3, Flux, PixArt) have no deep UNet path: the same technique
(the same spec, ``step_cache`` with its ``interval``) reuses their transformer blocks' outputs
instead, as FORA does (:mod:`.dit_cache`).

The high-level features that the deep part of the UNet (every block below the first down block
and above the last up block) hands to the last up block change little from one step to the next.
Every ``interval``-th step runs the whole UNet and keeps the input of the last up block; the steps
in between run only the shallow path (time embedding, ``conv_in``, the first down block, the last
up block with the cached deep feature, ``conv_out``). On SD 1.5 at 256 px such a step was measured
about 3.4x cheaper here. The DeepCache package (0.1.1) runs with diffusers 0.42, but it patches
``pipe.unet`` itself and cannot sit on a backend's converted UNet copy or be saved as ours; this
module is the same uniform-interval scheme on the backend's own module. On an OpenVINO graph
(the CPU pick), the graph itself is split into a full and a shallow model
(:mod:`.step_cache_openvino`; a DiT's graph at its transformer blocks:
:mod:`.dit_cache_openvino`); a UNet compiled by torch.compile (CUDA's pick) is compiled again as
those two paths (:mod:`.step_cache_compiled`).

State (the cached feature and the step counter) lives in the module and is reset when a new
generation starts: when the pipeline calls ``scheduler.set_timesteps`` (hooked by
:func:`sdopt.techniques.apply_pipeline_techniques`), or when the timestep goes up or the input
shapes change (for callers that bypass the pipeline).
"""

from __future__ import annotations

from ..backends.base import OptimizedModule
from ..backends.torch_module import sample_argument
from . import dit_cache_openvino, step_cache_compiled, step_cache_openvino
from .base import Param, StepCacheBase, Technique
from .dit_cache import DiTStepCacheModule
from .dit_cache import incompatible_reason as dit_incompatible_reason
from .eager import base_module, dit_blocks, eager_unet

NAME = "step_cache"
INTERVALS = (2, 3, 5)


class StepCacheModule(StepCacheBase):
    def __init__(self, inner: OptimizedModule, interval: int):
        unet, why = eager_unet(inner)
        super().__init__(inner, interval, unet, why)
        self._unet = [unet]  # a list: not registered twice as a submodule
        self.reset()

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        if self._begin_step(sample, timestep, encoder_hidden_states, extra):
            return self._shallow(sample, timestep, encoder_hidden_states,
                                 extra.get("added_cond_kwargs"))
        unet = self._unet[0]
        holder: dict = {}

        def grab(module, args, kwargs):
            holder["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        handle = unet.up_blocks[-1].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            out = self.technique_inner(sample, timestep, encoder_hidden_states, **extra)
        finally:
            handle.remove()
        self._cached = holder.get("h")
        return out

    def _shallow(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None):
        unet = self._unet[0]
        kwargs = base_module(self.technique_inner).call_kwargs(sample, timestep,
                                                               encoder_hidden_states, {})
        out = shallow_unet(unet, kwargs[sample_argument(unet)], timestep,
                           kwargs["encoder_hidden_states"], self._cached, added_cond_kwargs)
        return out.to(sample.dtype).contiguous()


def shallow_unet(unet, x, timestep, ehs, cached, added_cond_kwargs=None):
    """DeepCache's shallow path of a diffusers UNet: the time embedding, ``conv_in``, the first
    down block, the last up block on the ``cached`` deep feature (its input at the last full
    step), ``conv_out``. ``x`` and ``ehs`` in the UNet's dtype and layout."""
    emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=timestep), None)
    if added_cond_kwargs is not None:  # SDXL: pooled text embedding and size/crop ids
        aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=ehs,
                                 added_cond_kwargs=added_cond_kwargs)
        emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    x = unet.conv_in(x)
    residuals = (x,)
    first = unet.down_blocks[0]
    if getattr(first, "has_cross_attention", False):
        x, res = first(hidden_states=x, temb=emb, encoder_hidden_states=ehs)
    else:
        x, res = first(hidden_states=x, temb=emb)
    residuals += res
    last = unet.up_blocks[-1]
    res_for_last = residuals[:len(last.resnets)]
    if getattr(last, "has_cross_attention", False):
        h = last(hidden_states=cached, temb=emb, res_hidden_states_tuple=res_for_last,
                 encoder_hidden_states=ehs, upsample_size=None)
    else:
        h = last(hidden_states=cached, temb=emb, res_hidden_states_tuple=res_for_last,
                 upsample_size=None)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


# What apply_pipeline_techniques resets when a new generation starts.
CACHE_TYPES = (StepCacheModule, DiTStepCacheModule,
               step_cache_compiled.CompiledStepCacheModule,
               step_cache_openvino.OpenVINOStepCacheModule,
               dit_cache_openvino.OpenVINODiTStepCacheModule)


def _is_dit(module: OptimizedModule) -> bool:
    return bool(dit_blocks(getattr(base_module(module), "unet", None)))


def _runs_openvino(module: OptimizedModule) -> bool:
    from ..backends.openvino import OpenVINOModule

    return isinstance(base_module(module), OpenVINOModule)


def _openvino_dit(module: OptimizedModule) -> bool:
    """An OpenVINO graph converted from a DiT (its own splitting: :mod:`.dit_cache_openvino`)."""
    graph = getattr(base_module(module), "graph", None)
    return graph is not None and dit_cache_openvino.is_dit_graph(graph.model)


def apply(module: OptimizedModule, params: dict, original_unet) -> OptimizedModule:
    if _runs_openvino(module):
        why = incompatible_reason(module)
        if why:  # a stack: each setting was checked on the bare pick
            raise ValueError(f"step caching cannot split this graph: {why}")
        if _openvino_dit(module):
            return dit_cache_openvino.OpenVINODiTStepCacheModule(module, int(params["interval"]))
        return step_cache_openvino.OpenVINOStepCacheModule(module, int(params["interval"]))
    if step_cache_compiled.runs_compiled(module):
        return step_cache_compiled.CompiledStepCacheModule(module, int(params["interval"]))
    if _is_dit(module):
        return DiTStepCacheModule(module, int(params["interval"]))
    return StepCacheModule(module, int(params["interval"]))


def incompatible_reason(module: OptimizedModule, device=None) -> str | None:
    if _runs_openvino(module):
        if base_module(module) is not module:
            return (f"{module.variant.id} is wrapped by another technique: step caching splits "
                    "the OpenVINO graph itself")
        if _openvino_dit(module):
            return dit_cache_openvino.incompatible_reason(module)
        return step_cache_openvino.incompatible_reason(module)
    if step_cache_compiled.runs_compiled(module):
        return step_cache_compiled.incompatible_reason(module)
    if _is_dit(module):
        return dit_incompatible_reason(module, device)
    return eager_unet(module)[1]


def stack_reason(others: list[dict], module: OptimizedModule) -> str | None:
    """On an OpenVINO graph step caching splits the pick's own graph, which another UNet-level
    technique (token merging, which converts a graph of its own) would not be part of."""
    if _runs_openvino(module) and others:
        return (f"step caching splits {module.variant.id}'s own OpenVINO graph: it does not "
                f"stack on {', '.join(s['name'] for s in others)}, which runs a graph of its own")
    return None


def memory_copies(module: OptimizedModule) -> float | None:
    """On CPU, inductor freezes (constant-folds, prepacks) the weights into each compiled graph:
    the compiled step cache's two graphs hold two more copies of them (on CUDA they share the
    pick's)."""
    if step_cache_compiled.runs_compiled(module) and \
            base_module(module).options.get("freezing"):
        return 2.0
    return None


TECHNIQUE = Technique(
    NAME, "unet", (Param("interval", int, 1, 50),), tuple({"interval": n} for n in INTERVALS),
    lambda p: f"step_cache(every {p['interval']})",
    "reuse deep UNet features (DeepCache) or DiT block outputs (FORA) between neighbouring "
    "steps", apply,
    unavailable_reason=incompatible_reason, order=1, stack_reason=stack_reason,
    memory_copies=memory_copies)
