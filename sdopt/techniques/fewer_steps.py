"""Fewer denoising steps with a faster solver (DPM-Solver++ multistep, Lu et al. 2022).

Stable Diffusion 1.5 ships with PNDM; DPM-Solver++ (2nd order, multistep) reaches comparable
images in fewer steps. The pipeline keeps being called with the user's ``num_inference_steps``;
the replaced scheduler runs ``fraction`` of them (at least one), so the same call gets faster.
Every UNet call and its VAE-independent work shrink in proportion.

Image-to-image and inpainting pipelines run ``int(steps * strength)`` of a ``steps``-step schedule
(diffusers' ``get_timesteps``), and count ``steps`` from the requested number, not from the
schedule the scheduler really set: with fewer steps they sliced the short schedule as if it were
the long one (img2img-tiny at its default strength 0.8: 3 steps of 5 instead of 4 at 10 requested
and x0.5, none at all and a crash at x0.25). The pipeline's ``get_timesteps`` is given the count
of the schedule really set, so a call runs what the same pipeline called with the fewer steps
runs; and when that would be no step while the requested call runs some (1 step at strength
0.8), the schedule is set again with the fewest steps that leave one, so at least one step
always runs, from the noise level the strength asks for.

The DPM-Solver++ schedule's spacing is set by the technique (``spacing``, ``linspace``: from
t = 999 down, DPM-Solver++'s own default), not left to ``from_config``. diffusers gives the new
scheduler the old one's value only where the old config was *written* with it, and its own
default otherwise (``_use_default_values``), so the same model got two schedules: a pipeline
built in code (PNDM's ``leading`` implicit) ran ``linspace``, the same pipeline saved and read
back with ``from_pretrained`` (``leading`` written in its scheduler_config.json) ran ``leading``
(t = 831 ... at 5 steps of 20, starting below pure noise). On sd15 at 512 px, x0.25 with step
caching, the image the search judged (27.8 dB against fp32) was another one when the saved model
was loaded into the pipeline read from disk (24.8 dB): the twentieth session's peers run. Specs
saved without ``spacing`` keep ``from_config``'s choice, so their images do not change.
"""

from __future__ import annotations

import copy
import math

from ..logs import quiet_diffusers
from .base import Choice, Param, Technique

NAME = "fewer_steps"
FRACTIONS = (0.5, 0.25)
SPACINGS = ("linspace", "trailing", "leading")
SPACING = "linspace"  # what the search tries (see the module docstring)


def steps_for(requested: int, fraction: float) -> int:
    return max(1, int(round(requested * fraction)))


def make_scheduler(config, fraction: float, flow_matching: bool = False,
                   spacing: str | None = None):
    """``flow_matching``: SD3's and Flux's flow-matching Euler is kept (DPM-Solver++ would read
    their velocity prediction as noise); only its number of steps shrinks. ``spacing``: the
    DPM-Solver++ schedule's ``timestep_spacing`` (None: what ``from_config`` resolves)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    with quiet_diffusers():  # "PNDM keys ignored" is expected here
        if flow_matching:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        else:
            pinned = {"timestep_spacing": spacing} if spacing else {}
            scheduler = DPMSolverMultistepScheduler.from_config(
                config, algorithm_type="dpmsolver++", solver_order=2, **pinned)
    original = scheduler.set_timesteps

    # sigmas/timesteps are named: pipelines look for them in the signature before passing them.
    def set_timesteps(num_inference_steps=None, device=None, timesteps=None, sigmas=None,
                      **kwargs):
        def set_steps(count: int | None = None):
            """This request with ``count`` steps (None: ``fraction`` of the requested)."""
            steps, given_sigmas, extra = num_inference_steps, sigmas, dict(kwargs)
            if steps is not None:
                steps = count or steps_for(int(steps), fraction)
            elif given_sigmas is not None:
                # Flux passes its own evenly spaced sigmas instead of a step count.
                import numpy as np

                values = np.asarray(given_sigmas, dtype=np.float64)
                given_sigmas = np.linspace(values[0], values[-1],
                                           count or steps_for(len(values), fraction)).tolist()
            if given_sigmas is not None:
                extra["sigmas"] = given_sigmas
            if timesteps is not None:
                extra["timesteps"] = timesteps
            return original(steps, device=device, **extra)

        scheduler.sdopt_set_steps = set_steps  # get_timesteps below sets the request again
        return set_steps()

    scheduler.set_timesteps = set_timesteps
    scheduler.sdopt_step_fraction = fraction
    return scheduler


def fewest_steps(strength: float) -> int:
    """The fewest steps of which ``int(steps * strength)`` (what diffusers runs) is at least 1."""
    steps = max(1, math.ceil(1 / strength))
    while int(steps * strength) < 1:  # rounding of 1 / strength
        steps += 1
    return steps


def _strength_aware(pipe) -> None:
    """``pipe.get_timesteps`` (image-to-image, inpainting) counted on the schedule really set."""
    original = getattr(pipe, "get_timesteps", None)
    if original is None:
        return

    def get_timesteps(num_inference_steps, strength, *args, **kwargs):
        scheduler = pipe.scheduler
        denoising_start = kwargs.get("denoising_start", args[1] if len(args) > 1 else None)
        if getattr(scheduler, "sdopt_step_fraction", None) is None or \
                denoising_start is not None or not strength:
            return original(num_inference_steps, strength, *args, **kwargs)
        steps = len(scheduler.timesteps) // max(1, int(getattr(scheduler, "order", 1) or 1))
        if int(steps * strength) < 1 <= int(num_inference_steps * strength):
            steps = fewest_steps(strength)
            scheduler.sdopt_set_steps(steps)
        return original(steps, strength, *args, **kwargs)

    pipe.get_timesteps = get_timesteps


def apply_pipeline(pipe, params: dict) -> None:
    flow = type(pipe.scheduler).__name__.startswith("FlowMatch")
    pipe.scheduler = make_scheduler(copy.deepcopy(dict(pipe.scheduler.config)),
                                    float(params["fraction"]), flow_matching=flow,
                                    spacing=params.get("spacing"))
    _strength_aware(pipe)


TECHNIQUE = Technique(
    NAME, "pipeline", (Param("fraction", float, 0.01, 1.0),
                       Choice("spacing", SPACINGS, optional=True)),
    tuple({"fraction": f, "spacing": SPACING} for f in FRACTIONS),
    lambda p: f"dpm++ x{p['fraction']:g} steps",
    "DPM-Solver++ multistep at a fraction of the requested steps", apply_pipeline)
