"""Pipeline-level techniques. The approximate ones (they change the algorithm) are tried only with
``optimization_time="unconstrained"``; the ``constrained`` ones only lower the precision of a
component the UNet backends leave in fp32 (the bf16 VAE decoder), like a UNet precision
variant, so the constrained search tries them too, under the same threshold, judged on images.

Each technique is one module; this registry lists them, says which settings the search tries,
applies a list of technique specs (``{"name": ..., **params}``, what the manifest stores) to a
backend module and to a pipeline, and describes them. UNet-level techniques (step caching, token
merging) wrap or patch the backend's module and need its UNet in eager PyTorch; pipeline-level
ones (fewer steps, bf16 VAE decoder) replace a pipeline component with a private copy and work
with any backend.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from ..backends.base import OptimizedModule
from ..errors import SdoptError
from . import fewer_steps, step_cache, token_merge, vae_bf16
from ._unet import base_module

Spec = dict[str, Any]


@dataclass(frozen=True)
class Technique:
    name: str
    level: str  # "unet" | "pipeline"
    settings: tuple[Spec, ...]  # what the search tries
    label: Callable[[Spec], str]
    doc: str
    constrained: bool = False  # a precision change, not an approximation: constrained mode too


TECHNIQUES: dict[str, Technique] = {
    step_cache.NAME: Technique(
        step_cache.NAME, "unet", tuple({"interval": n} for n in step_cache.INTERVALS),
        lambda p: f"step_cache(every {p['interval']})",
        "reuse deep UNet features between neighbouring steps (DeepCache)"),
    token_merge.NAME: Technique(
        token_merge.NAME, "unet", tuple({"ratio": r} for r in token_merge.RATIOS),
        lambda p: f"token_merge({p['ratio']:g})",
        "merge similar tokens before self-attention at the highest resolution (ToMe for SD)"),
    fewer_steps.NAME: Technique(
        fewer_steps.NAME, "pipeline", tuple({"fraction": f} for f in fewer_steps.FRACTIONS),
        lambda p: f"dpm++ x{p['fraction']:g} steps",
        "DPM-Solver++ multistep at a fraction of the requested steps"),
    vae_bf16.NAME: Technique(
        vae_bf16.NAME, "pipeline", ({},), lambda p: "vae_bf16",
        "VAE decoder in bf16", constrained=True),
}


def _technique(spec: Spec) -> Technique:
    if not isinstance(spec, dict) or spec.get("name") not in TECHNIQUES:
        raise SdoptError(f"unknown technique {spec!r}: expected one of {', '.join(TECHNIQUES)}")
    return TECHNIQUES[spec["name"]]


def label(spec: Spec) -> str:
    return _technique(spec).label({k: v for k, v in spec.items() if k != "name"})


def all_specs(constrained_only: bool = False) -> list[Spec]:
    return [{"name": t.name, **s} for t in TECHNIQUES.values() for s in t.settings
            if t.constrained or not constrained_only]


def unavailable_reason(spec: Spec, module: OptimizedModule, device) -> str | None:
    """Why ``spec`` cannot be used with this backend module on this device (None: it can)."""
    name = _technique(spec).name
    if name in (step_cache.NAME, token_merge.NAME):
        return step_cache.incompatible_reason(module)
    if name == vae_bf16.NAME:
        return vae_bf16.unavailable_reason(device)
    return None


def apply_unet_techniques(module: OptimizedModule, specs: list[Spec],
                          original_unet) -> OptimizedModule:
    """The backend module with the UNet-level techniques of ``specs`` (token merging first: step
    caching then reuses features of the merged UNet)."""
    order = {token_merge.NAME: 0, step_cache.NAME: 1}
    for spec in sorted((s for s in specs if _technique(s).level == "unet"),
                       key=lambda s: order[s["name"]]):
        params = {k: v for k, v in spec.items() if k != "name"}
        if spec["name"] == token_merge.NAME:
            module = token_merge.apply(module, params, original_unet)
        else:
            module = step_cache.apply(module, params, original_unet)
    return module


def apply_pipeline_techniques(pipe, specs: list[Spec]) -> None:
    """Replace (private copies of) ``pipe``'s components for the pipeline-level techniques, and
    make every new generation reset the step caches. ``pipe`` shares its components with the
    user's pipeline, so nothing shared is modified."""
    for spec in specs:
        params = {k: v for k, v in spec.items() if k != "name"}
        if spec["name"] == fewer_steps.NAME:
            fewer_steps.apply_pipeline(pipe, params)
        elif spec["name"] == vae_bf16.NAME:
            vae_bf16.apply_pipeline(pipe, params)
        else:
            _technique(spec)
    caches = [m for m in pipe.unet.modules() if isinstance(m, step_cache.StepCacheModule)]
    if caches:
        if not any(s["name"] == fewer_steps.NAME for s in specs):
            pipe.scheduler = copy.deepcopy(pipe.scheduler)
        original = pipe.scheduler.set_timesteps

        def set_timesteps(*args, **kwargs):
            for cache in caches:
                cache.reset()
            return original(*args, **kwargs)

        pipe.scheduler.set_timesteps = set_timesteps


def validate_specs(specs, where: str) -> list[Spec]:
    """Specs read from a manifest: known names and the parameters each needs."""
    if not isinstance(specs, list):
        raise SdoptError(f"{where}: 'techniques' is not a list")
    needed = {step_cache.NAME: ("interval",), token_merge.NAME: ("ratio",),
              fewer_steps.NAME: ("fraction",), vae_bf16.NAME: ()}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or spec.get("name") not in TECHNIQUES:
            raise SdoptError(f"{where}: techniques[{i}] is {spec!r}: expected an object with a "
                             f"'name' among {', '.join(TECHNIQUES)}")
        for key in needed[spec["name"]]:
            if not isinstance(spec.get(key), (int, float)):
                raise SdoptError(f"{where}: techniques[{i}].{key} is missing or not a number")
    return specs


__all__ = ["TECHNIQUES", "Technique", "Spec", "all_specs", "label", "unavailable_reason",
           "apply_unet_techniques", "apply_pipeline_techniques", "base_module", "validate_specs"]
