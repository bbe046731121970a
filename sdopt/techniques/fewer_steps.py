"""Fewer denoising steps with a faster solver (DPM-Solver++ multistep, Lu et al. 2022).

Stable Diffusion 1.5 ships with PNDM; DPM-Solver++ (2nd order, multistep) reaches comparable
images in fewer steps. The pipeline keeps being called with the user's ``num_inference_steps``;
the replaced scheduler runs ``fraction`` of them (at least one), so the same call gets faster.
Every UNet call and its VAE-independent work shrink in proportion.
"""

from __future__ import annotations

import copy

from ..logs import quiet_diffusers
from .base import Param, Technique

NAME = "fewer_steps"
FRACTIONS = (0.5, 0.25)


def steps_for(requested: int, fraction: float) -> int:
    return max(1, int(round(requested * fraction)))


def make_scheduler(config, fraction: float, flow_matching: bool = False):
    """``flow_matching``: SD3's and Flux's flow-matching Euler is kept (DPM-Solver++ would read
    their velocity prediction as noise); only its number of steps shrinks."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    with quiet_diffusers():  # "PNDM keys ignored" is expected here
        if flow_matching:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        else:
            scheduler = DPMSolverMultistepScheduler.from_config(
                config, algorithm_type="dpmsolver++", solver_order=2)
    original = scheduler.set_timesteps

    # sigmas/timesteps are named: pipelines look for them in the signature before passing them.
    def set_timesteps(num_inference_steps=None, device=None, timesteps=None, sigmas=None,
                      **kwargs):
        if num_inference_steps is not None:
            num_inference_steps = steps_for(int(num_inference_steps), fraction)
        elif sigmas is not None:
            # Flux passes its own evenly spaced sigmas instead of a step count.
            import numpy as np

            values = np.asarray(sigmas, dtype=np.float64)
            sigmas = np.linspace(values[0], values[-1],
                                 steps_for(len(values), fraction)).tolist()
        if sigmas is not None:
            kwargs["sigmas"] = sigmas
        if timesteps is not None:
            kwargs["timesteps"] = timesteps
        return original(num_inference_steps, device=device, **kwargs)

    scheduler.set_timesteps = set_timesteps
    scheduler.sdopt_step_fraction = fraction
    return scheduler


def apply_pipeline(pipe, params: dict) -> None:
    flow = type(pipe.scheduler).__name__.startswith("FlowMatch")
    pipe.scheduler = make_scheduler(copy.deepcopy(dict(pipe.scheduler.config)),
                                    float(params["fraction"]), flow_matching=flow)


TECHNIQUE = Technique(
    NAME, "pipeline", (Param("fraction", float, 0.01, 1.0),),
    tuple({"fraction": f} for f in FRACTIONS), lambda p: f"dpm++ x{p['fraction']:g} steps",
    "DPM-Solver++ multistep at a fraction of the requested steps", apply_pipeline)
