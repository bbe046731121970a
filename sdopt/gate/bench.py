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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..version import __version__
from ..device import detect, library_versions
from ..errors import SdoptError
from ..models import denoiser_of, load_pipeline, pipeline_inputs
from ..optimize.api import apply_variant, load_model, optimize_model
from ..optimize.capture import native_side
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

    @classmethod
    def from_config(cls, config: Config) -> "BenchSettings":
        b = config.bench
        return cls(tuple(b.prompts), tuple(b.seeds), b.height, b.width, b.steps,
                   b.guidance_scale, b.batch, b.runs, b.warmup, b.device, b.threads)

    def images(self) -> list[tuple[str, int]]:
        return [(prompt, seed) for prompt in self.prompts for seed in self.seeds]


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


def _generate(pipe, batch: list[tuple[str, int]], s: BenchSettings, height: int, width: int):
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for _, seed in batch]
    # Image-to-image and inpainting pipelines get the same default start image and mask as in
    # the search (pipeline_inputs); text-to-image ones only the size.
    return pipe(prompt=[p for p, _ in batch], generator=generators,
                num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                output_type="pil", **pipeline_inputs(pipe, height, width)).images


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
                for chunk in batches:
                    for subject in subjects:
                        _generate(subject.pipe, chunk, settings, height, width)
                        bar.advance(warm)
            task = bar.add_task(f"benchmark ({' / '.join(names)} interleaved)",
                                total=calls * settings.runs)
            for run in range(settings.runs):
                for index, chunk in enumerate(batches):
                    for subject in subjects:  # A B A B: drift hits every variant alike
                        timer.reset()
                        with PeakMemory(device.kind) as mem:
                            t0 = time.perf_counter()
                            out = _generate(subject.pipe, chunk, settings, height, width)
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
    if opt.saved_model:
        saved = config.resolve(opt.saved_model)
        new = load_model(saved, pipe=with_unet(pipe, denoiser_of(pipe)), device=device)
    elif opt.candidate:
        new = apply_variant(pipe, opt.candidate, device, height=b.height, width=b.width)
    else:
        new = optimize_model(
            pipe, list(b.prompts), metric_drop_ths=opt.metric_drop_ths,
            metric_aggregate=opt.metric_aggregate,
            optimization_time=opt.optimization_time, ignore_compilers=opt.ignore_compilers,
            ignore_compressors=opt.ignore_compressors, device=device, backends=opt.backends,
            height=b.height, width=b.width, num_inference_steps=opt.steps,
            guidance_scale=b.guidance_scale, seed=b.seeds[0], repeats=opt.repeats,
            time_budget_s=opt.time_budget_s, exhaustive=opt.exhaustive, show=progress)
        optimization = new.sdopt_result.to_dict()
    variant = denoiser_of(new).variant
    return Subject(name, new, variant.id, variant.backend, list(variant.techniques)), optimization


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
    pipe = load_original(config)
    subjects, optimization = [], None
    if "original" in wanted:
        subjects.append(original_subject(pipe))
    if "optimized" in wanted:
        with torch_threads(config.bench.threads):  # the search times candidates too
            subject, optimization = optimized_subject(config, pipe, progress=progress)
        subjects.append(subject)
    subjects.sort(key=lambda s: wanted.index(s.name))
    return run_bench(subjects, BenchSettings.from_config(config), out_dir, progress=progress,
                     console=console, config=config.public_dict(), optimization=optimization)
