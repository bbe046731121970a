"""End-to-end evaluation of a whole pipeline: the images it makes and its latency per image.

Techniques such as step caching or fewer steps change how many UNet calls an image needs, and a
bf16 VAE changes work outside the UNet, so they cannot be judged by one UNet call: they are timed
per image, from prompt to pixels, and judged on the images themselves. Every run uses the same
prompts, seeds (``seed + prompt index``, as when capturing UNet inputs), size and step count, so
that the original's images are the reference for every candidate's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .inputs import PromptInput, as_input
from .metrics import METRICS, Metric, clip_unavailable_reason, score_images
from .table import CandidateResult


def synchronize() -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A pipeline's float image in [0, 1] as the 8-bit pixels every image metric compares."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass
class ImageRun:
    images: list[np.ndarray]
    latencies_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.latencies_s)


@dataclass
class EndToEnd:
    prompts: list[str]
    height: int
    width: int
    steps: int
    guidance_scale: float = 7.5
    seed: int = 0
    warmup_steps: int = 2  # one short untimed generation first: first-call allocations
    # At least this many timed generations (the prompts again, same seeds) so that one prompt
    # does not give a one-sample latency; only the first pass's images are scored.
    min_timed: int = 3
    reference: ImageRun | None = None
    metrics: list[Metric] = field(default_factory=list)
    # Each prompt's start image and mask (image-to-image, inpainting); None: the defaults.
    inputs: list[PromptInput] | None = None

    def generate(self, pipe, index: int, steps: int | None = None) -> np.ndarray:
        """Prompt ``index``'s image (its seed, this evaluation's size and steps)."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed + index)
        entry = self.inputs[index] if self.inputs else as_input(self.prompts[index])
        out = pipe(entry.prompt, **entry.pipeline_kwargs(pipe, self.height, self.width),
                   num_inference_steps=steps or self.steps,
                   guidance_scale=self.guidance_scale, generator=generator, output_type="np")
        return out.images[0]

    def warmup(self, pipe) -> None:
        """One short untimed generation: first-call allocations stay out of the timings."""
        if self.warmup_steps:
            with torch.inference_mode():
                self.generate(pipe, 0, min(self.warmup_steps, self.steps))

    def run(self, pipe, done: ImageRun | None = None, *, warm: bool = False) -> ImageRun:
        """Every prompt's image and at least ``min_timed`` timed generations; ``done``: the
        first generations, already made by the same pipeline, not repeated. ``warm``: every
        module of ``pipe`` has run in this process already (the original's, a UNet that was
        timed), so no warmup generation."""
        images, latencies = (list(done.images), list(done.latencies_s)) if done else ([], [])
        if not done and not warm:
            self.warmup(pipe)
        with torch.inference_mode():
            n = max(len(self.prompts), self.min_timed)
            for run in range(len(latencies), n):
                image, seconds = self._timed(pipe, run % len(self.prompts))
                latencies.append(seconds)
                if run < len(self.prompts):
                    images.append(to_uint8(image))
        return ImageRun(images, latencies)

    def _timed(self, pipe, index: int) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        image = self.generate(pipe, index)
        synchronize()
        return image, time.perf_counter() - t0

    def run_reference(self, pipe, captured: ImageRun | None = None) -> ImageRun:
        """The original's images and latency; ``captured``: the capture run's (same prompts,
        seeds, size and steps, decoded and timed). The capture has no warmup generation: its
        latency is the median of at least ``min_timed`` images, which a slower first image does
        not move (sd15 at 256 px, Zen 4: the first image 23.5 s, the next three 21.0-22.2 s,
        where a 2-step warmup cost 15 s)."""
        self.reference = self.run(pipe, captured)
        return self.reference

    def score(self, run: ImageRun) -> dict[str, dict[str, float]]:
        """Each configured image metric of ``run``'s images against the reference images."""
        assert self.reference is not None, "run_reference first"
        return score_images(self.reference.images, run.images, self.prompts, self.metrics)


def end_to_end_for(prompts, height: int, width: int, steps: int, guidance_scale: float,
                   seed: int, gate: Metric) -> EndToEnd:
    """The evaluation every candidate of one search is scored by: PSNR and SSIM always, the
    CLIP metrics when a local CLIP model is configured, and the gate's own metric.
    ``prompts``: strings, or PromptInputs carrying start images and masks."""
    metrics = [METRICS["psnr"], METRICS["ssim"]]
    if clip_unavailable_reason() is None:
        metrics += [METRICS["clip_cosine"], METRICS["clip_score"]]
    if gate.name not in {m.name for m in metrics}:
        metrics.append(gate)
    inputs = [as_input(p) for p in prompts]
    return EndToEnd([i.prompt for i in inputs], height, width, steps, guidance_scale, seed,
                    metrics=metrics, inputs=inputs)


def notes() -> list[str]:
    """What the end-to-end scores leave out, for the search table's notes."""
    reason = clip_unavailable_reason()
    return [f"CLIP metrics skipped: {reason}"] if reason else []


def fill_row(row: CandidateResult, run: ImageRun, e2e: EndToEnd, gate: Metric) -> None:
    """Put ``run``'s latency and image scores into a search-table row."""
    row.e2e_latency_s = run.median_s
    row.e2e_latency_samples_s = list(run.latencies_s)
    row.image_metrics = e2e.score(run)
    row.image_metric_drop = row.image_metrics[gate.name]["mean"]
    row.image_metric_drop_max = row.image_metrics[gate.name]["max"]
