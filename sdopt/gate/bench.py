"""End-to-end benchmark of whole pipelines: what a user of the optimized model actually waits for.

The UNet speedup the search reports is not what the gate must protect: the text encoder and the
VAE decode cost time too (the VAE decode is 21% of SD 1.5 at 256 px here). So this module times
complete ``pipe(prompt)`` calls with fixed seeds, splits each call into stages with forward hooks,
and saves the images so that quality can be compared image by image later.

Variants measured in one job are interleaved (A B A B ...) after a warm-up of each: thermal or
neighbour drift on a shared runner then hits every variant alike instead of whichever ran last.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..version import __version__
from ..cpu_threads import fit_torch_threads
from ..device import detect, library_versions
from ..errors import SdoptError
from ..backends import get_backend
from ..models import denoiser_of, load_pipeline, pipeline_inputs
from ..optimize.api import apply_variant, load_model, optimize_model
from ..optimize.capture import native_side
from ..optimize.inputs import (PromptInput, first_image_size, fit, input_image_hashes, load_image,
                               takes)
from ..optimize.optimized import with_unet
from ..optimize.timing import sample_stats
from ..store import write_json
from .config import BENCH_VARIANTS, Config
from .pytest_benchmark import pytest_benchmark_json
from .results import IMAGES_DIR, PYTEST_BENCHMARK_NAME, RESULTS_KIND, RESULTS_NAME, \
    RESULTS_SCHEMA_VERSION, finite
from .stages import STAGES, PeakMemory, StageTimer

# Environment variables that change timings (allocator, thread pools): recorded with the results.
_TIMING_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD")


@dataclass
class Subject:
    """One pipeline to measure, and how results.json should describe it."""

    name: str  # key in results["variants"]: "original" | "optimized" (or "base"/"head")
    pipe: Any
    label: str
    backend: str
    techniques: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BenchSettings:
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    height: int | None
    width: int | None
    steps: int
    guidance_scale: float
    batch: int
    runs: int
    warmup: int
    device: str = "auto"
    threads: int | None = None
    # One per prompt: its start image and mask (bench.start_image/mask_image), fitted to
    # height x width; empty: every prompt gets the default image and mask.
    inputs: tuple[PromptInput, ...] = ()

    @classmethod
    def from_config(cls, config: Config, pipe=None) -> "BenchSettings":
        """The bench settings, with the configured start images and masks read and fitted
        (checked against ``pipe``'s inputs when given); the size defaults to the first start
        image's, as in the search."""
        b = config.bench
        inputs, height, width = bench_inputs(config, pipe)
        return cls(tuple(b.prompts), tuple(b.seeds), height, width, b.steps,
                   b.guidance_scale, b.batch, b.runs, b.warmup, b.device, b.threads,
                   tuple(inputs))

    def images(self) -> list[tuple[str, int]]:
        return [(prompt, seed) for prompt in self.prompts for seed in self.seeds]

    def image_kwargs(self, pipe, start: int, count: int, height: int,
                     width: int) -> dict[str, Any]:
        """What ``pipe`` is called with besides the prompts for images ``start`` to
        ``start + count - 1`` of :meth:`images`: the size, and each image's start image and mask
        (the defaults where none is configured, as in the search)."""
        if not self.inputs:
            return pipeline_inputs(pipe, height, width)
        items = [self.inputs[(start + k) // len(self.seeds)] for k in range(count)]
        if count == 1:  # as the search calls it: one image, not a list of one
            return items[0].pipeline_kwargs(pipe, height, width)
        each = [item.pipeline_kwargs(pipe, height, width) for item in items]
        out = dict(each[0])
        for key in ("image", "mask_image"):
            if key in out:
                out[key] = [kwargs[key] for kwargs in each]
        return out


def bench_inputs(config: Config, pipe=None) -> tuple[list[PromptInput], int | None, int | None]:
    """The prompts with the start images and masks of ``bench.start_image``/``mask_image``
    (empty when neither is set), and the bench's height and width (None: the pipeline's own).
    Paths are the config's (sdopt.gate.config.Config.local_file: inside its folder unless
    allowed); a bad file, or an image for a pipeline that takes none, is one line naming the
    file and the field. The images are fitted to the size, which defaults to the first start
    image's (sdopt.optimize.inputs.first_image_size, as optimize_model does)."""
    b = config.bench
    height, width = b.height, b.width
    if b.start_image is None and b.mask_image is None:
        return [], height, width
    if pipe is not None:
        has_image, has_mask = takes(pipe)
        for name, ok in (("start_image", has_image), ("mask_image", has_mask)):
            if getattr(b, name) is not None and not ok:
                raise SdoptError(f"{config.source}: field 'bench.{name}': "
                                 f"{type(pipe).__name__} takes no "
                                 f"{'start image' if name == 'start_image' else 'mask'}: "
                                 "remove it (only image-to-image and inpainting pipelines do)")
    loaded: dict[tuple[str, str], Any] = {}

    def read(name: str, index: int, relative: str | None):
        if relative is None:
            return None
        listed = isinstance(getattr(b, name), list)
        field = f"bench.{name}[{index}]" if listed else f"bench.{name}"
        if (name, relative) not in loaded:
            path = config.local_file(relative, field, allow_outside=b.allow_outside_paths)
            loaded[(name, relative)] = load_image(
                path, f"{config.source}: field '{field}': '{relative}'",
                mask=name == "mask_image")
        return loaded[(name, relative)]

    inputs = [PromptInput(prompt, read("start_image", i, image), read("mask_image", i, mask))
              for i, (prompt, image, mask) in enumerate(zip(
                  b.prompts, b.image_paths("start_image"), b.image_paths("mask_image")))]
    size = first_image_size(inputs)
    if size is not None:
        height, width = height or size[0], width or size[1]
    if height is None or width is None:
        if pipe is None:
            return inputs, height, width  # fitted once the pipeline's own size is known
        height, width = height or native_side(pipe), width or native_side(pipe)
    return fit(inputs, height, width), height, width


def summarize(samples: list[float]) -> dict[str, float | list[float]]:
    """The latency block of results.json (contract: samples, median, iqr, mean, min, max), with
    pytest-benchmark's statistics."""
    stats = sample_stats(samples)
    return {"samples": list(samples), "median": stats.median, "iqr": stats.iqr,
            "mean": stats.mean, "min": stats.min, "max": stats.max}


def environment(device_kind: str | None = None) -> dict[str, Any]:
    """Fingerprint recorded with every result: compare refuses unlike machines by default."""
    import torch

    return {
        "device": detect(device_kind).fingerprint(),
        "libraries": library_versions(),
        "env": {
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "variables": {k: os.environ[k] for k in _TIMING_ENV if k in os.environ},
        },
    }


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _generate(pipe, batch: list[tuple[str, int]], s: BenchSettings, height: int, width: int,
              start: int = 0):
    """Images ``start`` to ``start + len(batch) - 1`` of ``s.images()``."""
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for _, seed in batch]
    # Image-to-image and inpainting pipelines get the configured start images and masks, else
    # the same default ones as in the search (pipeline_inputs); text-to-image ones only the size.
    return pipe(prompt=[p for p, _ in batch], generator=generators,
                num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                output_type="pil",
                **s.image_kwargs(pipe, start, len(batch), height, width)).images


def run_bench(subjects: list[Subject], settings: BenchSettings, out_dir: str | os.PathLike, *,
              progress: bool = True, console=None, config: dict | None = None,
              optimization: dict | None = None) -> dict[str, Any]:
    """Measure ``subjects`` interleaved; write images under ``out_dir/images/<name>/`` and return
    the results document (the caller writes it, so that the whole directory is atomic)."""
    if not subjects:
        raise SdoptError("nothing to benchmark: bench.variants is empty")
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise SdoptError(f"variants {names} repeat a name")
    out_dir = Path(out_dir)
    fit_torch_threads()  # the configured threads (if any) still win inside the block
    with torch_threads(settings.threads):
        device = detect(None if settings.device == "auto" else settings.device)
        env = environment(device.kind)
        return _measure(subjects, settings, out_dir, device, env, progress=progress,
                        console=console, config=config, optimization=optimization)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run with ``count`` torch intra-op threads (None: unchanged), restoring them afterwards."""
    import torch

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _measure(subjects, settings, out_dir, device, env, *, progress, console, config,
             optimization) -> dict[str, Any]:
    import torch

    names = [s.name for s in subjects]
    first = subjects[0].pipe
    height = settings.height or native_side(first)
    width = settings.width or native_side(first)
    if settings.inputs:  # every call at one size (a no-op for images fitted already)
        settings = replace(settings, inputs=tuple(fit(list(settings.inputs), height, width)))
    images = settings.images()
    batches = _chunks(images, settings.batch)
    timer = StageTimer(device.kind)
    for subject in subjects:
        subject.pipe.to(device.torch_device)
        if hasattr(subject.pipe, "set_progress_bar_config"):
            subject.pipe.set_progress_bar_config(disable=True)
        timer.attach(subject.pipe)

    latency = {n: [] for n in names}
    stages = {n: {stage: [] for stage in STAGES} for n in names}
    peaks: dict[str, int] = {}
    memory_kind = "cuda_allocated" if device.kind == "cuda" else "rss"
    records: dict[str, list[dict]] = {n: [] for n in names}

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True, quiet=not progress)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not progress)
    calls = len(subjects) * len(batches)
    try:
        with bar, torch.inference_mode():
            warm = bar.add_task("warm-up", total=calls * settings.warmup)
            for _ in range(settings.warmup):
                for index, chunk in enumerate(batches):
                    for subject in subjects:
                        _generate(subject.pipe, chunk, settings, height, width,
                                  index * settings.batch)
                        bar.advance(warm)
            task = bar.add_task(f"benchmark ({' / '.join(names)} interleaved)",
                                total=calls * settings.runs)
            for run in range(settings.runs):
                for index, chunk in enumerate(batches):
                    for subject in subjects:  # A B A B: drift hits every variant alike
                        timer.reset()
                        with PeakMemory(device.kind) as mem:
                            t0 = time.perf_counter()
                            out = _generate(subject.pipe, chunk, settings, height, width,
                                            index * settings.batch)
                            if device.kind == "cuda":
                                torch.cuda.synchronize()
                            elapsed = time.perf_counter() - t0
                        n = len(chunk)
                        latency[subject.name].append(elapsed / n)
                        for stage in STAGES:
                            stages[subject.name][stage].append(timer.totals[stage] / n)
                        peaks[subject.name] = max(peaks.get(subject.name, 0), mem.peak)
                        if run == 0:
                            _save_images(out_dir, subject.name, out, chunk,
                                         index * settings.batch, records[subject.name])
                        bar.advance(task)
    finally:
        timer.detach()

    variants = {}
    for subject in subjects:
        lat = summarize(latency[subject.name])
        variants[subject.name] = {
            "label": subject.label, "backend": subject.backend,
            "techniques": list(subject.techniques), "latency_s": lat,
            "throughput_images_per_s": 1.0 / lat["median"] if lat["median"] > 0 else None,
            "stages_s": {stage: statistics.median(v) for stage, v in stages[subject.name].items()},
            "peak_memory_bytes": peaks.get(subject.name), "memory_kind": memory_kind,
            "images": records[subject.name],
        }
    cfg = dict(config or {})
    cfg.update(prompts=list(settings.prompts), seeds=list(settings.seeds), height=height,
               width=width, steps=settings.steps, guidance_scale=settings.guidance_scale,
               batch=settings.batch, runs=settings.runs, warmup=settings.warmup,
               threads=settings.threads)
    cfg.update(input_image_hashes(settings.inputs))
    cfg.setdefault("model", "")
    return {"schema_version": RESULTS_SCHEMA_VERSION, "kind": RESULTS_KIND,
            "created_unix": int(time.time()), "sdopt_version": __version__, "config": cfg,
            "environment": env, "variants": variants,
            "optimization": optimization}


def _save_images(out_dir: Path, name: str, images, chunk, start: int, records: list) -> None:
    folder = out_dir / IMAGES_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    for offset, (image, (prompt, seed)) in enumerate(zip(images, chunk)):
        rel = f"{IMAGES_DIR}/{name}/{start + offset}.png"
        image.save(out_dir / rel, format="PNG")
        records.append({"prompt": prompt, "seed": int(seed), "path": rel})


def write_results(results: dict[str, Any], directory: str | os.PathLike, *,
                  config_path: str | None = None, repo: str | os.PathLike | None = None) -> None:
    """results.json and its pytest-benchmark twin, each written atomically (``config_path``,
    ``repo``: see :func:`sdopt.gate.pytest_benchmark.pytest_benchmark_json`)."""
    directory = Path(directory)
    write_json(directory / RESULTS_NAME, finite(results))
    write_json(directory / PYTEST_BENCHMARK_NAME,
               finite(pytest_benchmark_json(results, config_path=config_path, repo=repo)))


# --- building the variants named in the config -------------------------------------------------

def load_original(config: Config):
    single = config.resolve(config.single_file_config)
    return load_pipeline(config.model_ref(), config.revision,
                         single_file_config=str(single) if single else None)


def optimized_subject(config: Config, pipe, *, progress: bool = True,
                      name: str = "optimized") -> tuple[Subject, dict | None]:
    """The 'optimized' variant: a saved model (load_model), one named candidate (apply_variant),
    or a search (optimize_model). ``pipe`` is left as it was: the new pipeline shares its text
    encoder, VAE and scheduler, and has its own UNet."""
    opt, b = config.optimize, config.bench
    device = None if b.device == "auto" else b.device
    optimization = None
    inputs, height, width = bench_inputs(config, pipe)
    if opt.saved_model:
        saved = config.resolve(opt.saved_model)
        new = load_model(saved, pipe=with_unet(pipe, denoiser_of(pipe)), device=device)
    elif opt.candidate:
        new = apply_variant(pipe, opt.candidate, device, height=height, width=width)
    else:
        # The search gets the bench's start images and masks (the same pixels).
        prompts = [{"prompt": i.prompt, "image": i.image, "mask_image": i.mask_image}
                   for i in inputs] or list(b.prompts)
        new = optimize_model(
            pipe, prompts, metric_drop_ths=opt.metric_drop_ths,
            metric_aggregate=opt.metric_aggregate,
            optimization_time=opt.optimization_time, ignore_compilers=opt.ignore_compilers,
            ignore_compressors=opt.ignore_compressors, device=device, backends=opt.backends,
            height=height, width=width, num_inference_steps=opt.steps,
            guidance_scale=b.guidance_scale, seed=b.seeds[0], repeats=opt.repeats,
            time_budget_s=opt.time_budget_s, exhaustive=opt.exhaustive, show=progress)
        optimization = new.sdopt_result.to_dict()
    variant = denoiser_of(new).variant
    techniques = get_backend(variant.backend).techniques_for(variant, denoiser_of(pipe))
    return Subject(name, new, variant.id, variant.backend, list(techniques)), optimization


def original_subject(pipe) -> Subject:
    return Subject("original", pipe, "torch_eager/fp32 (original pipeline)", "torch_eager", [])


def bench_config(config: Config, out_dir: str | os.PathLike, *, variants: list[str] | None = None,
                 progress: bool = True, console=None) -> dict[str, Any]:
    """Build the configured variants and measure them into ``out_dir`` (see :func:`run_bench`)."""
    wanted = list(variants or config.bench.variants)
    unknown = sorted(set(wanted) - set(BENCH_VARIANTS))
    if unknown:  # the CLI and the config check names; a Python caller may pass anything
        raise SdoptError(f"variants: unknown variant '{unknown[0]}': expected "
                         f"{' and/or '.join(BENCH_VARIANTS)}")
    bench_inputs(config)  # a bad start image fails before the model loads
    pipe = load_original(config)
    settings = BenchSettings.from_config(config, pipe)
    subjects, optimization = [], None
    if "original" in wanted:
        subjects.append(original_subject(pipe))
    if "optimized" in wanted:
        with torch_threads(config.bench.threads):  # the search times candidates too
            subject, optimization = optimized_subject(config, pipe, progress=progress)
        subjects.append(subject)
    subjects.sort(key=lambda s: wanted.index(s.name))
    return run_bench(subjects, settings, out_dir, progress=progress,
                     console=console, config=config.public_dict(), optimization=optimization)
