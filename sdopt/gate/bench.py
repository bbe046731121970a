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
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import __version__
from .config import Config
from ..errors import SdoptError

RESULTS_NAME = "results.json"
PYTEST_BENCHMARK_NAME = "results.pytest-benchmark.json"
RESULTS_KIND = "sdopt-bench-results"
RESULTS_SCHEMA_VERSION = 1
STAGES = ("text_encoder", "unet", "vae_decode")
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


class StageTimer:
    """Forward hooks that add each stage's wall time to the current call's totals.

    The VAE decode is not a ``forward``: the pipeline calls ``vae.decode``, which runs
    ``post_quant_conv`` and ``decoder``, so those two submodules are hooked. Modules shared by
    two pipelines (with_unet shares everything but the UNet) are hooked once.
    """

    def __init__(self, device_kind: str = "cpu"):
        self._cuda = device_kind == "cuda"
        self._handles: list = []
        self._hooked: set[int] = set()
        self._starts: dict[str, float] = {}
        self._depth = dict.fromkeys(STAGES, 0)
        self.totals = dict.fromkeys(STAGES, 0.0)

    def _now(self) -> float:
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def attach(self, pipe) -> None:
        vae = getattr(pipe, "vae", None)
        for stage, module in (("text_encoder", getattr(pipe, "text_encoder", None)),
                              ("unet", getattr(pipe, "unet", None)),
                              ("vae_decode", getattr(vae, "post_quant_conv", None)),
                              ("vae_decode", getattr(vae, "decoder", None))):
            if module is None or id(module) in self._hooked or not hasattr(module,
                                                                           "register_forward_hook"):
                continue
            self._hooked.add(id(module))
            self._handles.append(module.register_forward_pre_hook(self._pre(stage)))
            self._handles.append(module.register_forward_hook(self._post(stage)))

    # A stage can nest in itself: an optimized UNet that wraps the original UNet object (the fp32
    # reference does) runs both modules' hooks. Only the outermost call of a stage is timed.
    def _pre(self, stage: str) -> Callable:
        def hook(_module, _args):
            if self._depth[stage] == 0:
                self._starts[stage] = self._now()
            self._depth[stage] += 1
        return hook

    def _post(self, stage: str) -> Callable:
        def hook(_module, _args, _output):
            self._depth[stage] = max(0, self._depth[stage] - 1)
            if self._depth[stage] == 0 and stage in self._starts:
                self.totals[stage] += self._now() - self._starts.pop(stage)
        return hook

    def reset(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self._depth = dict.fromkeys(STAGES, 0)
        self._starts.clear()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked.clear()


class _PeakMemory:
    """Peak memory of one call: CUDA max allocated on GPU, else the process RSS (sampled)."""

    def __init__(self, device_kind: str):
        self.kind = "cuda_allocated" if device_kind == "cuda" else "rss"
        self._sampler = None

    def __enter__(self):
        if self.kind == "cuda_allocated":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            from ..optimize.timing import _RssSampler

            self._sampler = _RssSampler()
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_allocated":
            import torch

            self.peak = int(torch.cuda.max_memory_allocated())
        else:
            self.peak = int(self._sampler.stop())


def summarize(samples: list[float]) -> dict[str, float | list[float]]:
    """The latency block of results.json (contract: samples, median, iqr, mean, min, max)."""
    if not samples:
        raise ValueError("no latency samples")
    if len(samples) >= 2:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return {"samples": list(samples), "median": statistics.median(samples), "iqr": iqr,
            "mean": statistics.fmean(samples), "min": min(samples), "max": max(samples)}


def environment(device_kind: str | None = None) -> dict[str, Any]:
    """Fingerprint recorded with every result: compare refuses unlike machines by default."""
    import torch

    from ..device import detect, library_versions

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


def _native_side(pipe) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def _generate(pipe, batch: list[tuple[str, int]], s: BenchSettings, height: int, width: int):
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for _, seed in batch]
    return pipe(prompt=[p for p, _ in batch], generator=generators,
                num_inference_steps=s.steps, guidance_scale=s.guidance_scale, height=height,
                width=width, output_type="pil").images


def run_bench(subjects: list[Subject], settings: BenchSettings, out_dir: str | os.PathLike, *,
              progress: bool = True, console=None, config: dict | None = None,
              optimization: dict | None = None) -> dict[str, Any]:
    """Measure ``subjects`` interleaved; write images under ``out_dir/images/<name>/`` and return
    the results document (the caller writes it, so that the whole directory is atomic)."""
    from ..device import detect

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
    height = settings.height or _native_side(first)
    width = settings.width or _native_side(first)
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
                        with _PeakMemory(device.kind) as mem:
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
    folder = out_dir / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    for offset, (image, (prompt, seed)) in enumerate(zip(images, chunk)):
        rel = f"images/{name}/{start + offset}.png"
        image.save(out_dir / rel, format="PNG")
        records.append({"prompt": prompt, "seed": int(seed), "path": rel})


# --- pytest-benchmark compatible export --------------------------------------------------------

def _pb_stats(samples: list[float]) -> dict[str, Any]:
    """pytest-benchmark 5's ``stats`` block, with its definitions (quartiles, 1.5 IQR fences)."""
    data = sorted(samples)
    n = len(data)
    mean = statistics.fmean(data)
    stddev = statistics.stdev(data) if n > 1 else 0.0
    if n >= 4:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    else:
        q1, q3 = data[0], data[-1]
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    ld15 = next((x for x in data if x >= low), data[0])
    hd15 = next((x for x in reversed(data) if x <= high), data[-1])
    iqr_out = sum(1 for x in data if x < low or x > high)
    sd_out = sum(1 for x in data if x < mean - stddev or x > mean + stddev) if n > 1 else 0
    return {"min": data[0], "max": data[-1], "mean": mean, "stddev": stddev, "rounds": n,
            "median": statistics.median(data), "iqr": iqr, "q1": q1, "q3": q3,
            "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
            "outliers": f"{sd_out};{iqr_out}", "ld15iqr": ld15, "hd15iqr": hd15,
            "ops": 1.0 / mean if mean > 0 else 0.0, "total": sum(data), "data": list(samples),
            "iterations": 1}


def pytest_benchmark_json(results: dict[str, Any]) -> dict[str, Any]:
    """The same measurements in pytest-benchmark's ``--benchmark-json`` layout, so that
    ``pytest-benchmark compare`` and github-action-benchmark (tool: pytest) read them."""
    import datetime

    cfg = results.get("config", {})
    dev = results.get("environment", {}).get("device", {})
    env = results.get("environment", {}).get("env", {})
    uname = platform.uname()
    benchmarks = []
    for name, v in results.get("variants", {}).items():
        benchmarks.append({
            "group": f"sdopt {cfg.get('model', '')} {cfg.get('height')}x{cfg.get('width')} "
                     f"{cfg.get('steps')} steps",
            "name": f"sdopt[{name}]", "fullname": f"sdopt.toml::sdopt[{name}]",
            "params": {"variant": name}, "param": name,
            "extra_info": {"label": v.get("label"), "backend": v.get("backend"),
                           "unit": "seconds per image",
                           "throughput_images_per_s": v.get("throughput_images_per_s"),
                           "stages_s": v.get("stages_s"),
                           "peak_memory_bytes": v.get("peak_memory_bytes"),
                           "memory_kind": v.get("memory_kind")},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": cfg.get("runs"),
                        "max_time": None, "min_time": None, "precision": None, "confidence": None,
                        "warmup": bool(cfg.get("warmup"))},
            "stats": _pb_stats(v["latency_s"]["samples"]),
        })
    created = results.get("created_unix") or time.time()
    return {
        "machine_info": {
            "node": uname.node, "processor": uname.processor, "machine": uname.machine,
            "python_implementation": platform.python_implementation(),
            "python_version": env.get("python", platform.python_version()),
            "release": uname.release, "system": uname.system,
            "cpu": {"brand_raw": dev.get("extra", {}).get("host_cpu") or dev.get("name", ""),
                    "count": dev.get("cores"), "flags": list(dev.get("cpu_flags", []))},
            "gpu": dev.get("name") if dev.get("kind") == "cuda" else None,
        },
        "commit_info": {"id": os.environ.get("GITHUB_SHA", "unversioned"), "time": None,
                        "author_time": None, "dirty": False,
                        "project": os.environ.get("GITHUB_REPOSITORY", "sdopt"),
                        "branch": os.environ.get("GITHUB_HEAD_REF") or "(unknown)"},
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.fromtimestamp(created, datetime.timezone.utc).isoformat(),
        "version": "5.3.1",
    }


def write_results(results: dict[str, Any], directory: str | os.PathLike) -> None:
    """results.json and its pytest-benchmark twin, each written atomically."""
    from ..store import write_json

    directory = Path(directory)
    write_json(directory / RESULTS_NAME, _finite(results))
    write_json(directory / PYTEST_BENCHMARK_NAME, _finite(pytest_benchmark_json(results)))


def _finite(value):
    """JSON has no NaN/Infinity: a non-finite number becomes null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_results(path: str | os.PathLike, *, what: str = "results") -> dict[str, Any]:
    """Read and check a results.json (a file or the directory holding it), naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise SdoptError(f"{what} '{path}' not found: expected a results.json written by "
                         "'sdopt bench'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"{what} '{path}' is corrupt: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise SdoptError(f"{what} '{path}' is not an sdopt results file: expected \"kind\": "
                         f"\"{RESULTS_KIND}\"")
    version = data.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise SdoptError(f"{what} '{path}': schema_version is {version!r}, this sdopt "
                         f"({__version__}) reads {RESULTS_SCHEMA_VERSION}: re-run 'sdopt bench' "
                         "(and 'sdopt baseline save --update-baseline') with this version")
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise SdoptError(f"{what} '{path}' is corrupt: 'variants' is missing or empty")
    for name, v in variants.items():
        samples = (v.get("latency_s") or {}).get("samples") if isinstance(v, dict) else None
        if not isinstance(samples, list) or not samples or not all(
                isinstance(x, (int, float)) for x in samples):
            raise SdoptError(f"{what} '{path}' is corrupt: variants.{name}.latency_s.samples is "
                             "missing or not a list of numbers")
        if not isinstance(v.get("images", []), list):
            raise SdoptError(f"{what} '{path}' is corrupt: variants.{name}.images is not a list")
    if not isinstance(data.get("environment"), dict):
        raise SdoptError(f"{what} '{path}' is corrupt: 'environment' is missing")
    return data


def iter_image_records(results: dict, variant: str) -> Iterable[dict]:
    return (results.get("variants", {}).get(variant) or {}).get("images", [])


# --- building the variants named in the config -------------------------------------------------

def load_original(config: Config):
    from ..models import load_pipeline

    single = config.resolve(config.single_file_config)
    return load_pipeline(config.model_ref(), config.revision,
                         single_file_config=str(single) if single else None)


def optimized_subject(config: Config, pipe, *, progress: bool = True,
                      name: str = "optimized") -> tuple[Subject, dict | None]:
    """The 'optimized' variant: a saved model (load_model), one named candidate (apply_variant),
    or a search (optimize_model). ``pipe`` is left as it was: the new pipeline shares its text
    encoder, VAE and scheduler, and has its own UNet."""
    from ..optimize.api import apply_variant, load_model, optimize_model
    from ..optimize.optimized import with_unet

    opt, b = config.optimize, config.bench
    device = None if b.device == "auto" else b.device
    optimization = None
    if opt.saved_model:
        saved = config.resolve(opt.saved_model)
        new = load_model(saved, pipe=with_unet(pipe, pipe.unet), device=device)
    elif opt.candidate:
        new = apply_variant(pipe, opt.candidate, device, height=b.height, width=b.width)
    else:
        new = optimize_model(
            pipe, list(b.prompts), metric_drop_ths=opt.metric_drop_ths,
            optimization_time=opt.optimization_time, ignore_compilers=opt.ignore_compilers,
            ignore_compressors=opt.ignore_compressors, device=device, backends=opt.backends,
            height=b.height, width=b.width, num_inference_steps=opt.steps,
            guidance_scale=b.guidance_scale, seed=b.seeds[0], repeats=opt.repeats,
            time_budget_s=opt.time_budget_s, show=progress)
        optimization = new.sdopt_result.to_dict()
    variant = new.unet.variant
    return Subject(name, new, variant.id, variant.backend, list(variant.techniques)), optimization


def original_subject(pipe) -> Subject:
    return Subject("original", pipe, "torch_eager/fp32 (original pipeline)", "torch_eager", [])


def bench_config(config: Config, out_dir: str | os.PathLike, *, variants: list[str] | None = None,
                 progress: bool = True, console=None) -> dict[str, Any]:
    """Build the configured variants and measure them into ``out_dir`` (see :func:`run_bench`)."""
    wanted = list(variants or config.bench.variants)
    for name in wanted:
        if name not in ("original", "optimized"):
            raise SdoptError(f"--variants: unknown variant '{name}': expected original and/or "
                             "optimized")
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
