"""Pipeline-level techniques: the registry. The approximate ones (they change the algorithm) are
tried only with ``optimization_time="unconstrained"``; the ``constrained`` ones only lower the
precision of a component the UNet backends leave in fp32 (the VAE decoder in bf16, or compiled
with OpenVINO on CPU or torch.compile on CUDA), like a UNet precision variant, so the constrained search tries them too, under
the same threshold, judged on images.

Each technique is one module declaring one :class:`~sdopt.techniques.base.Technique`; this
registry lists them (the one place to add one) and applies a list of technique specs
(``{"name": ..., **params}``, what the manifest stores) to a backend module and to a pipeline.
UNet-level techniques (step caching, token merging) wrap or patch the backend's module and need
its denoiser in eager PyTorch (a UNet, or a DiT's transformer blocks); pipeline-level ones (fewer
steps, bf16 VAE decoder) replace a pipeline component with a private copy and work with any
backend.
"""

from __future__ import annotations

import copy
import functools

from ..backends.base import OptimizedModule
from ..errors import SdoptError
from ..models import denoiser_of
from . import (fewer_steps, step_cache, text_encoder_half, text_encoder_openvino, token_merge,
               vae_bf16, vae_openvino, vae_torch_compile)
from .base import Spec, Technique
from .eager import base_module

# The order settings are tried in. The OpenVINO VAE decoder comes before the torch bf16 one: on
# sd15 at 256 px it made the image faster (5.11x against 4.65x fp32 eager, the same int8 UNet,
# exhaustive search 2026-12-01), and a constrained search whose budget ran out after the first
# VAE setting kept the torch one (3.80x per image against the exhaustive pick's 4.78x). On CUDA
# the compiled half-precision decoder comes before the eager bf16 one, which was slower than fp32
# on an H200 (1.065x the image's time, 2026-11-26).
TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    step_cache.TECHNIQUE, token_merge.TECHNIQUE, fewer_steps.TECHNIQUE, vae_openvino.TECHNIQUE,
    vae_torch_compile.TECHNIQUE, vae_bf16.TECHNIQUE, text_encoder_openvino.TECHNIQUE,
    text_encoder_half.TECHNIQUE)}


def component_modules(pipe) -> dict[str, list]:
    """The modules each replaceable component (Technique.component) runs in ``pipe``: the
    VAE's decode (``post_quant_conv``, ``decoder``) and every text encoder, for timing their
    share of an image."""
    vae = getattr(pipe, "vae", None)
    out = {"vae": [m for m in (getattr(vae, "post_quant_conv", None),
                               getattr(vae, "decoder", None)) if m is not None],
           "text_encoder": [getattr(pipe, n) for n in text_encoder_openvino.COMPONENTS
                            if text_encoder_openvino.is_supported(getattr(pipe, n, None))]}
    return {name: modules for name, modules in out.items() if modules}


def technique_of(spec: Spec) -> Technique:
    if not isinstance(spec, dict) or spec.get("name") not in TECHNIQUES:
        raise SdoptError(f"unknown technique {spec!r}: expected one of {', '.join(TECHNIQUES)}")
    return TECHNIQUES[spec["name"]]


def params_of(spec: Spec) -> dict:
    return {k: v for k, v in spec.items() if k != "name"}


def label(spec: Spec) -> str:
    return technique_of(spec).label(params_of(spec))


def candidate_id(base_id: str, specs: list[Spec]) -> str:
    """The search table's id of a base candidate with techniques on top."""
    return base_id + "".join(f"+{label(s)}" for s in specs)


def all_specs(constrained_only: bool = False) -> list[Spec]:
    return [{"name": t.name, **s} for t in TECHNIQUES.values() for s in t.settings
            if t.constrained or not constrained_only]


def unavailable_reason(spec: Spec, module: OptimizedModule, device) -> str | None:
    """Why ``spec`` cannot be used with this backend module on this device (None: it can)."""
    technique = technique_of(spec)
    return technique.unavailable_reason(module, device) or \
        technique.setting_reason(params_of(spec), device)


def conflict_reason(specs: list[Spec]) -> str | None:
    """Why ``specs`` cannot stack: two of them replace the same pipeline component (the VAE in
    bf16 and the VAE compiled with OpenVINO); None when they can."""
    owners: dict[str, Spec] = {}
    for spec in specs:
        component = technique_of(spec).component
        if component is None:
            continue
        if component in owners:
            return (f"{label(owners[component])} and {label(spec)} both replace the pipeline's "
                    f"{component}: they cannot stack")
        owners[component] = spec
    return None


def stack_reason(specs: list[Spec], module: OptimizedModule) -> str | None:
    """Why ``specs`` cannot stack on this backend module although each can run on it alone
    (None: they can)."""
    unet_level = [s for s in specs if technique_of(s).level == "unet"]
    for spec in unet_level:
        why = technique_of(spec).stack_reason([s for s in unet_level if s is not spec], module)
        if why:
            return why
    return None


def memory_copies(specs: list[Spec], module: OptimizedModule) -> float | None:
    """What applying ``specs`` to this backend module adds to host memory at its peak, in copies
    of the denoiser's fp32 weights (None: none of them has a measured need)."""
    known = [c for c in (technique_of(s).memory_copies(module) for s in specs) if c is not None]
    return sum(known) if known else None


def apply_unet_techniques(module: OptimizedModule, specs: list[Spec],
                          original_unet) -> OptimizedModule:
    """The backend module with the UNet-level techniques of ``specs``, in their declared order
    (token merging first: step caching then reuses features of the merged UNet)."""
    unet_level = [s for s in specs if technique_of(s).level == "unet"]
    for spec in sorted(unet_level, key=lambda s: technique_of(s).order):
        module = technique_of(spec).apply(module, params_of(spec), original_unet)
    return module


def apply_pipeline_techniques(pipe, specs: list[Spec]) -> None:
    """Replace (private copies of) ``pipe``'s components for the pipeline-level techniques, and
    make every new generation reset the step caches. ``pipe`` shares its components with the
    user's pipeline, so nothing shared is modified."""
    conflict = conflict_reason(specs)
    if conflict:
        raise SdoptError(conflict)
    for spec in specs:
        technique = technique_of(spec)
        if technique.level == "pipeline":
            technique.apply(pipe, params_of(spec))
    caches = [m for m in denoiser_of(pipe).modules()
              if isinstance(m, step_cache.CACHE_TYPES)]
    if caches:
        if not any(s["name"] == fewer_steps.NAME for s in specs):
            pipe.scheduler = copy.deepcopy(pipe.scheduler)
        original = pipe.scheduler.set_timesteps

        # wraps: pipelines read set_timesteps' signature (Flux's passes sigmas when it has them).
        @functools.wraps(original)
        def set_timesteps(*args, **kwargs):
            for cache in caches:
                cache.reset()
            return original(*args, **kwargs)

        pipe.scheduler.set_timesteps = set_timesteps


def validate_specs(specs, where: str) -> list[Spec]:
    """Specs read from a manifest: known names, and each parameter present and within bounds."""
    if not isinstance(specs, list):
        raise SdoptError(f"{where}: 'techniques' is not a list")
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or spec.get("name") not in TECHNIQUES:
            raise SdoptError(f"{where}: techniques[{i}] is {spec!r}: expected an object with a "
                             f"'name' among {', '.join(TECHNIQUES)}")
        TECHNIQUES[spec["name"]].check(spec, f"{where}: techniques[{i}]")
    conflict = conflict_reason(specs)
    if conflict:
        raise SdoptError(f"{where}: {conflict}")
    return specs


__all__ = ["TECHNIQUES", "Technique", "Spec", "all_specs", "label", "candidate_id",
           "unavailable_reason", "stack_reason", "apply_unet_techniques",
           "apply_pipeline_techniques", "base_module", "validate_specs", "technique_of",
           "conflict_reason", "memory_copies"]
