"""UNet inputs captured from real pipeline runs, across the whole timestep range.

Speedster verified a candidate on the first denoising step only; errors of reduced precision
differ between noisy early steps and nearly clean late ones, so we record every UNet call the
original pipeline makes for the user's prompts (inputs and the original outputs, which are the
reference), then hold out an evenly spread subset for verification. The rest calibrates backends
that need data (int8).
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..errors import SdoptError
from ..models import denoiser_name, denoiser_of
from ..techniques import component_modules
from .components import ComponentCalls, ComponentRecorder, detached
from .endtoend import synchronize, to_uint8
from .inputs import PromptInput, as_input
from .memory import PeakRss
from .paired import CallTimes
from ..backends.activation_ranges import RangeRecorder
from ..backends.base import UNetInputs


@dataclass
class UNetSample:
    inputs: UNetInputs
    reference: torch.Tensor  # the original UNet's output for these inputs
    prompt_index: int
    step_index: int
    # The call's own seconds in the pipeline (CPU only: on CUDA a hook would time the launch);
    # None where not timed.
    latency_s: float | None = None
    # CPU: the activation ranges this call produced (backends.activation_ranges)
    ranges: dict | None = None

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
    # With ``decode=True``: each prompt's image (uint8 HWC) and the seconds its generation took.
    images: list = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None  # the process's while the original pipeline ran
    # CPU: each replaceable component's seconds (techniques.component_modules) per generation
    component_s: dict[str, list[float]] = field(default_factory=dict)
    # With ``decode=True``: the calls the first image made into each replaceable component,
    # which a component setting is timed by (components.setting_saving)
    component_calls: ComponentCalls | None = None

    def component_seconds(self) -> dict[str, float]:
        """Each component's median seconds per image, the first generation left out when there
        were others (its first calls are cold)."""
        out = {}
        for name, per_image in self.component_s.items():
            warm = per_image[1:] if len(per_image) > 1 else per_image
            if warm:
                out[name] = statistics.median(warm)
        return out

    def warm_call_latencies_s(self) -> list[float]:
        """The timed UNet calls of every generation but the first (its first calls carry the
        process's first-call costs); all but the first call when there was one generation."""
        timed = [s for s in self.samples if s.latency_s is not None]
        if len({s.prompt_index for s in timed}) > 1:
            first = timed[0].prompt_index
            return [s.latency_s for s in timed if s.prompt_index != first]
        return [s.latency_s for s in timed[1:]]

    def calibration_ranges(self) -> list[dict]:
        """The activation ranges of each calibration call, or none when a call has none."""
        ranges = [s.ranges for s in self.calibration]
        return ranges if ranges and all(r is not None for r in ranges) else []

    @property
    def timesteps(self) -> list[float]:
        return sorted({s.timestep for s in self.verification})

    def describe(self) -> dict:
        sample = self.samples[0].inputs
        extra = _extra_shapes(sample.extra)
        return {
            "sample_shape": list(sample.sample.shape),
            "encoder_hidden_states_shape": list(sample.encoder_hidden_states.shape),
            **({"extra_shapes": extra} if extra else {}),
            "height": self.height, "width": self.width, "steps": self.steps,
            "guidance_scale": self.guidance_scale, "captured_calls": len(self.samples),
            "verification_calls": len(self.verification),
            "verification_timesteps": self.timesteps,
        }


def _extra_shapes(extra: dict, prefix: str = "") -> dict[str, list[int]]:
    """Shapes of the extra tensors a family passes (SDXL's added_cond_kwargs), by dotted name."""
    out: dict[str, list[int]] = {}
    for key, value in sorted(extra.items()):
        if isinstance(value, dict):
            out.update(_extra_shapes(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = list(value.shape)
    return out


_IGNORED_KWARGS = {"return_dict", "cross_attention_kwargs", "joint_attention_kwargs"}


def collect_samples(pipe, prompts: list[str | PromptInput], *, height: int, width: int,
                    steps: int, guidance_scale: float, seed: int, n_verify: int = 8,
                    progress=None, decode: bool = False) -> SampleSet:
    """Run the original pipeline and record UNet calls. A prompt may be a PromptInput, with the
    start image (and mask) image-to-image and inpainting pipelines are called with; plain
    prompts get their default ones.

    ``decode=False`` stops at the latents (the VAE is not needed). ``decode=True`` makes the
    images too and times each generation: the same run (same prompts, seeds, size and steps)
    is then the end-to-end reference, which a cold search on sd15 otherwise spent another 55 s
    of 768 s generating again.

    On CPU each UNet call is timed too (between the hooks, copies excluded): the original's
    per-call latency, which the search then need not measure again (13 s of a cold sd15 search
    at 256 px)."""
    captured: list[tuple[tuple, dict]] = []
    outputs: list[torch.Tensor] = []

    def pre_hook(module, args, kwargs):
        captured.append((tuple(detached(a) for a in args),
                         {k: detached(v) for k, v in kwargs.items()}))

    def post_hook(module, args, kwargs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output.sample
        outputs.append(out.detach().clone())
        if range_recorder is not None:
            ranges.append(range_recorder.take())
            hooks_s.append(range_recorder.spent_s)

    denoiser = denoiser_of(pipe)
    handles = [denoiser.register_forward_pre_hook(pre_hook, with_kwargs=True),
               denoiser.register_forward_hook(post_hook, with_kwargs=True)]
    on_cpu = all(p.device.type == "cpu" for p in denoiser.parameters())
    timer = CallTimes(denoiser) if on_cpu else None
    # CPU: OpenVINO's min/max int8 takes its ranges from these calls (no statistics pass)
    range_recorder = RangeRecorder(denoiser) if on_cpu else None
    ranges: list[dict] = []
    hooks_s: list[float] = []  # per call, the seconds the recorder's hooks took inside it
    # Without decoding there is no image to weigh a component against: no component timers.
    components = {name: [CallTimes(m) for m in modules]
                  for name, modules in component_modules(pipe).items()} \
        if on_cpu and decode else {}
    component_s: dict[str, list[float]] = {name: [] for name in components}
    samples: list[UNetSample] = []
    images, latencies = [], []
    recorder = ComponentRecorder(pipe) if decode else None
    component_calls = None
    memory = PeakRss().start()
    try:
        for p_index, entry in enumerate(map(as_input, prompts)):
            start = len(captured)
            generator = torch.Generator(device="cpu").manual_seed(seed + p_index)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = pipe(entry.prompt, **entry.pipeline_kwargs(pipe, height, width),
                           num_inference_steps=steps, guidance_scale=guidance_scale,
                           generator=generator, output_type="np" if decode else "latent")
            if decode:
                synchronize()
                latencies.append(time.perf_counter() - t0)
                images.append(to_uint8(out.images[0]))
            if recorder is not None and component_calls is None:
                component_calls = recorder.stop()  # one image's calls
            seconds = timer.take() if timer else []
            # each call's own time, without what recording its ranges added
            seconds = [s - (hooks_s[start + i] if start + i < len(hooks_s) else 0.0)
                       for i, s in enumerate(seconds)]
            for name, timers in components.items():
                component_s[name].append(sum(sum(t.take()) for t in timers))
            for step, ((args, kwargs), out) in enumerate(zip(captured[start:], outputs[start:])):
                call = start + step
                samples.append(UNetSample(_to_inputs(denoiser, args, kwargs), out, p_index,
                                          step, seconds[step] if step < len(seconds) else None,
                                          ranges[call] if call < len(ranges) else None))
            if progress is not None:
                progress()
    finally:
        for handle in handles:
            handle.remove()
        if recorder is not None:
            recorder.stop()
        if range_recorder is not None:
            range_recorder.close()
        all_timers = [t for ts in components.values() for t in ts]
        if timer is not None:
            all_timers.append(timer)
        for t in all_timers:
            t.close()
        peak = memory.stop()
    result = SampleSet(samples, height=height, width=width, steps=steps,
                       guidance_scale=guidance_scale, images=images, latencies_s=latencies,
                       peak_rss_bytes=peak,
                       component_s=component_s, component_calls=component_calls)
    result.verification, result.calibration = split_samples(samples, n_verify)
    return result


def _to_inputs(denoiser, args: tuple, kwargs: dict) -> UNetInputs:
    """One recorded call as UNetInputs, whatever mix of positional and keyword arguments the
    pipeline used: they are bound to the denoiser's own signature (SD passes the latent and the
    timestep positionally, DiT pipelines pass everything by name)."""
    params = inspect.signature(denoiser.forward).parameters
    positional = [n for n, p in params.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    values = dict(zip(positional, args))
    values.update(kwargs)
    first = positional[0] if positional else "sample"
    timestep = values.pop("timestep")
    if not isinstance(timestep, torch.Tensor):
        timestep = torch.tensor(timestep)
    sample, ehs = values.pop(first), values.pop("encoder_hidden_states", None)
    extra = {k: v for k, v in values.items() if k not in _IGNORED_KWARGS and v is not None}
    return UNetInputs(sample, timestep, ehs, extra)


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
    for backends that need an example to export or convert without a search. SDXL's UNet also
    takes its added conditions (pooled text embedding and the six size/crop time ids). A DiT
    transformer's inputs (pooled projections, guidance, position ids, masks) differ by family:
    one real call of a one-step generation is recorded instead."""
    if denoiser_name(model) != "unet":
        height = height or native_side(model)
        recorded = collect_samples(model, ["a photo of a cat"], height=height,
                                   width=width or height, steps=1, guidance_scale=7.5, seed=0,
                                   n_verify=1)
        return recorded.samples[0].inputs
    unet = model.unet
    side = int(unet.config.sample_size * model.vae_scale_factor)
    height, width = height or side, width or side
    h, w = height // model.vae_scale_factor, width // model.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    text_len = getattr(getattr(model, "tokenizer", None), "model_max_length", 77)
    extra = {}
    cfg = unet.config
    if cfg.get("addition_embed_type") == "text_time":
        n_ids = 6  # original size, crop top-left, target size
        pooled = cfg.projection_class_embeddings_input_dim - n_ids * cfg.addition_time_embed_dim
        time_ids = torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=generator),
            "time_ids": time_ids.repeat(batch, 1)}
    elif cfg.get("addition_embed_type"):
        raise SdoptError(f"the UNet's addition_embed_type '{cfg.addition_embed_type}' has no "
                         "example inputs here: use optimize_model, which records real calls")
    return UNetInputs(
        sample=torch.randn(batch, cfg.in_channels, h, w, generator=generator),
        timestep=torch.tensor(999),
        encoder_hidden_states=torch.randn(batch, text_len, cfg.cross_attention_dim,
                                          generator=generator), extra=extra)


def native_side(model) -> int:
    """The image side the pipeline makes by default: its denoiser's sample size in latents
    (Flux's transformer has none: the pipeline's ``default_sample_size``) times the VAE's
    scale factor."""
    config = denoiser_of(model).config
    sample = getattr(config, "sample_size", None) or getattr(model, "default_sample_size", None)
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    return int((sample or 64) * model.vae_scale_factor)
