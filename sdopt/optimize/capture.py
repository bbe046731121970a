"""UNet inputs captured from real pipeline runs, across the whole timestep range.

Speedster verified a candidate on the first denoising step only; errors of reduced precision
differ between noisy early steps and nearly clean late ones, so we record every UNet call the
original pipeline makes for the user's prompts (inputs and the original outputs, which are the
reference), then hold out an evenly spread subset for verification. The rest calibrates backends
that need data (int8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backends.base import UNetInputs


@dataclass
class UNetSample:
    inputs: UNetInputs
    reference: torch.Tensor  # the original UNet's output for these inputs
    prompt_index: int
    step_index: int

    @property
    def timestep(self) -> float:
        return float(self.inputs.timestep.float().reshape(-1)[0])


@dataclass
class SampleSet:
    samples: list[UNetSample]
    verification: list[UNetSample] = field(default_factory=list)
    calibration: list[UNetSample] = field(default_factory=list)
    height: int = 0
    width: int = 0
    steps: int = 0
    guidance_scale: float = 0.0

    @property
    def timesteps(self) -> list[float]:
        return sorted({s.timestep for s in self.verification})

    def describe(self) -> dict:
        sample = self.samples[0].inputs
        return {
            "sample_shape": list(sample.sample.shape),
            "encoder_hidden_states_shape": list(sample.encoder_hidden_states.shape),
            "height": self.height, "width": self.width, "steps": self.steps,
            "guidance_scale": self.guidance_scale, "captured_calls": len(self.samples),
            "verification_calls": len(self.verification),
            "verification_timesteps": self.timesteps,
        }


_IGNORED_KWARGS = {"return_dict", "cross_attention_kwargs"}


def _detach(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def collect_samples(pipe, prompts: list[str], *, height: int, width: int, steps: int,
                    guidance_scale: float, seed: int, n_verify: int = 8,
                    progress=None) -> SampleSet:
    """Run the original pipeline (latents only: the VAE is not needed) and record UNet calls."""
    captured: list[tuple[tuple, dict]] = []
    outputs: list[torch.Tensor] = []

    def pre_hook(module, args, kwargs):
        captured.append((tuple(_detach(a) for a in args),
                         {k: _detach(v) for k, v in kwargs.items()}))

    def post_hook(module, args, kwargs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output.sample
        outputs.append(out.detach().clone())

    handles = [pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True),
               pipe.unet.register_forward_hook(post_hook, with_kwargs=True)]
    samples: list[UNetSample] = []
    try:
        for p_index, prompt in enumerate(prompts):
            start = len(captured)
            generator = torch.Generator(device="cpu").manual_seed(seed + p_index)
            with torch.inference_mode():
                pipe(prompt, height=height, width=width, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=generator, output_type="latent")
            for step, ((args, kwargs), out) in enumerate(
                    zip(captured[start:], outputs[start:])):
                samples.append(UNetSample(_to_inputs(args, kwargs), out, p_index, step))
            if progress is not None:
                progress()
    finally:
        for handle in handles:
            handle.remove()
    result = SampleSet(samples, height=height, width=width, steps=steps,
                       guidance_scale=guidance_scale)
    result.verification, result.calibration = split_samples(samples, n_verify)
    return result


def _to_inputs(args: tuple, kwargs: dict) -> UNetInputs:
    names = ("sample", "timestep", "encoder_hidden_states")
    values = dict(zip(names, args))
    for name in names:
        if name in kwargs:
            values[name] = kwargs[name]
    extra = {k: v for k, v in kwargs.items()
             if k not in names and k not in _IGNORED_KWARGS and v is not None}
    timestep = values["timestep"]
    if not isinstance(timestep, torch.Tensor):
        timestep = torch.tensor(timestep)
    return UNetInputs(values["sample"], timestep, values["encoder_hidden_states"], extra)


def split_samples(samples: list[UNetSample], n_verify: int):
    """Hold out ``n_verify`` calls spread evenly over the timestep range (and over prompts)."""
    if len(samples) <= 1:
        return list(samples), list(samples)
    ordered = sorted(samples, key=lambda s: (-s.timestep, s.prompt_index))
    n_verify = max(1, min(n_verify, len(ordered) // 2))
    if n_verify == 1:
        picks = [0]
    else:
        picks = sorted({round(i * (len(ordered) - 1) / (n_verify - 1)) for i in range(n_verify)})
    verification = [ordered[i] for i in picks]
    chosen = set(picks)
    calibration = [s for i, s in enumerate(ordered) if i not in chosen]
    return verification, calibration


def example_inputs(model, height: int | None = None, width: int | None = None,
                   batch: int = 2) -> UNetInputs:
    """UNet inputs of the shapes the pipeline makes at height x width (CFG doubles the batch),
    for backends that need an example to export or convert without a search."""
    unet = model.unet
    side = int(unet.config.sample_size * model.vae_scale_factor)
    h, w = (height or side) // model.vae_scale_factor, (width or side) // model.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    text_len = getattr(getattr(model, "tokenizer", None), "model_max_length", 77)
    return UNetInputs(
        sample=torch.randn(batch, unet.config.in_channels, h, w, generator=generator),
        timestep=torch.tensor(999),
        encoder_hidden_states=torch.randn(batch, text_len, unet.config.cross_attention_dim,
                                          generator=generator))
