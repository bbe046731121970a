"""Candidate generation, verification, timing and selection.

Every candidate goes through the same steps: availability (skipped, with the reason), build plus
a first call (compilers compile there; counted as build time), verification of the metric on the
held-out inputs against the original outputs, timing. Any exception in a step marks that candidate
failed with its reason and the search goes on. The fastest candidate whose drop is within the
threshold wins; only it and the original stay in memory.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from .backends import FOREIGN_COMPILERS, load_builtin_backends
from .backends.base import BACKENDS, BuildContext, OptimizedModule, Variant, canonical_backend_name
from .device import DeviceInfo
from .errors import SdoptError
from .metrics import LOSSLESS_TOLERANCE, Metric
from .sampling import SampleSet
from .timing import Timing, measure

STATUS_SELECTED, STATUS_OK, STATUS_REJECTED = "selected", "ok", "rejected"
STATUS_FAILED, STATUS_SKIPPED = "failed", "skipped"

REFERENCE_ID = "torch_eager/fp32"


@dataclass
class CandidateResult:
    id: str
    backend: str
    variant: str
    precision: str
    techniques: list[str]
    status: str
    reason: str = ""
    build_s: float | None = None
    latency_s: float | None = None
    latency_iqr_s: float | None = None
    latency_samples_s: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    model_size_bytes: int | None = None
    metric_drop: float | None = None
    metric_drop_max: float | None = None
    speedup: float | None = None
    batch: int = 1

    @property
    def throughput(self) -> float | None:
        """UNet calls' images per second (the batch holds both CFG halves of one image)."""
        return None if not self.latency_s else 1.0 / self.latency_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_per_s": self.throughput}


@dataclass
class OptimizationResult:
    device: dict[str, Any]
    metric: str
    metric_drop_ths: float | None
    optimization_time: str
    samples: dict[str, Any]
    candidates: list[CandidateResult]
    original: CandidateResult | None
    selected: CandidateResult | None
    wall_s: float = 0.0

    @property
    def speedup(self) -> float | None:
        if self.original and self.selected and self.selected.latency_s:
            return self.original.latency_s / self.selected.latency_s
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "metric": self.metric, "metric_drop_ths": self.metric_drop_ths,
            "optimization_time": self.optimization_time, "samples": self.samples,
            "original": self.original.to_dict() if self.original else None,
            "selected": self.selected.to_dict() if self.selected else None,
            "speedup": self.speedup, "wall_s": self.wall_s,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _canonical_list(names, what: str) -> set[str]:
    out = set()
    for name in names or ():
        if str(name).strip().lower() in FOREIGN_COMPILERS and what == "ignore_compilers":
            continue  # a Speedster compiler sdopt does not have: nothing to ignore
        try:
            out.add(canonical_backend_name(name))
        except SdoptError as exc:
            raise SdoptError(f"{what}: {exc}") from None
    return out


_COMPRESSORS = {"int8": "int8", "quantization": "int8", "dynamic_quantization": "int8",
                "fp16": "fp16", "bf16": "bf16", "half": "fp16"}


def plan_candidates(device: DeviceInfo, *, backends=None, ignore_compilers=None,
                    ignore_compressors=None) -> list[Variant]:
    """Every variant of every registered backend, filtered by the user's include/ignore lists."""
    load_builtin_backends()
    include = _canonical_list(backends, "backends") if backends else None
    ignored = _canonical_list(ignore_compilers, "ignore_compilers")
    ignored_precisions = set()
    for name in ignore_compressors or ():
        key = str(name).strip().lower()
        if key not in _COMPRESSORS:
            raise SdoptError(f"ignore_compressors: unknown name '{name}': expected one of "
                             f"{', '.join(sorted(_COMPRESSORS))}")
        ignored_precisions.add(_COMPRESSORS[key])
    reference, variants = None, []
    for name, backend in BACKENDS.items():
        for variant in backend.variants(device):
            if variant.id == REFERENCE_ID:
                reference = variant  # always measured, first: everything is compared with it
            elif name not in ignored and (include is None or name in include) \
                    and variant.precision not in ignored_precisions:
                variants.append(variant)
    return [reference] + variants


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {first[:300]}{where}"


def _time_module(module: OptimizedModule, inputs: list, device_kind: str, **kwargs) -> Timing:
    def call(i):
        inp = inputs[i % len(inputs)]
        module(inp.sample, inp.timestep, inp.encoder_hidden_states, **inp.extra)

    return measure(call, device_kind=device_kind, **kwargs)


def run_search(unet: torch.nn.Module, samples: SampleSet, device: DeviceInfo, variants: list[Variant],
               *, metric: Metric, metric_drop_ths: float | None, optimization_time: str,
               warmup: int = 2, repeats: int = 5, max_seconds_per_candidate: float = 30.0,
               time_budget_s: float | None = None, cache_dir=None,
               on_candidate: Callable[[Variant, str], None] | None = None,
               ) -> tuple[OptimizationResult, OptimizedModule | None]:
    """Try every variant; return the result table and the winning module."""
    started = time.perf_counter()
    verification = [s for s in samples.verification]
    timing_inputs = [s.inputs.to(device.torch_device) for s in verification[:3]]
    ctx = BuildContext(device=device, example=timing_inputs[0],
                       calibration=[s.inputs for s in samples.calibration], cache_dir=cache_dir)
    batch = int(timing_inputs[0].sample.shape[0])
    results: list[CandidateResult] = []
    best: tuple[CandidateResult, OptimizedModule] | None = None
    original: CandidateResult | None = None
    ths = LOSSLESS_TOLERANCE if metric_drop_ths is None else metric_drop_ths

    for variant in variants:
        row = CandidateResult(variant.id, variant.backend, variant.name, variant.precision,
                              list(variant.techniques), STATUS_SKIPPED, batch=batch)
        results.append(row)
        if on_candidate:
            on_candidate(variant, "start")
        backend = BACKENDS[variant.backend]
        reason = backend.unavailable_reason(device, variant)
        if reason is None and metric_drop_ths is None and not variant.lossless:
            reason = (f"{variant.precision} changes results and metric_drop_ths is None "
                      "(lossless only): pass metric_drop_ths to allow it")
        spent = time.perf_counter() - started
        if reason is None and time_budget_s is not None and spent > time_budget_s \
                and variant.id != REFERENCE_ID:
            reason = f"optimization time budget ({time_budget_s:.0f} s) spent"
        if reason is not None:
            row.reason = reason
            if on_candidate:
                on_candidate(variant, "done")
            continue
        module = None
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                module = backend.build(unet, variant, ctx)
                module.eval()
                inputs = timing_inputs[0]
                module(inputs.sample, inputs.timestep, inputs.encoder_hidden_states,
                       **inputs.extra)
                if device.kind == "cuda":
                    torch.cuda.synchronize()
            row.build_s = time.perf_counter() - t0
            row.model_size_bytes = module.size_bytes()
            drops = []
            with torch.inference_mode():
                for s in verification:
                    inp = s.inputs.to(device.torch_device)
                    out = module(inp.sample, inp.timestep, inp.encoder_hidden_states, **inp.extra)
                    drops.append(float(metric.fn(s.reference.to(out.device), out)))
            row.metric_drop = sum(drops) / len(drops)
            row.metric_drop_max = max(drops)
            if not math.isfinite(row.metric_drop):
                raise FloatingPointError("non-finite outputs (NaN or inf) on verification inputs")
            timing = _time_module(module, timing_inputs, device.kind, warmup=warmup,
                                  repeats=repeats, max_seconds=max_seconds_per_candidate)
            row.latency_s, row.latency_iqr_s = timing.median_s, timing.iqr_s
            row.latency_samples_s = timing.samples_s
            row.peak_memory_bytes = timing.peak_memory_bytes
            if row.metric_drop > ths and variant.id != REFERENCE_ID:
                row.status = STATUS_REJECTED
                row.reason = (f"{metric.name} drop {row.metric_drop:.4g} > threshold {ths:.4g}")
            else:
                row.status = STATUS_OK
        except Exception as exc:  # noqa: BLE001 - a failing candidate never stops the search
            row.status = STATUS_FAILED
            row.reason = _describe(exc)
            if variant.id == REFERENCE_ID:
                raise SdoptError(f"the original UNet failed to run: {row.reason}") from exc
        if variant.id == REFERENCE_ID and row.status == STATUS_OK:
            original = row
        keep = row.status == STATUS_OK and (best is None or row.latency_s < best[0].latency_s)
        previous = None
        if keep:
            previous, best = best, (row, module)
        del module, previous
        gc.collect()
        if on_candidate:
            on_candidate(variant, "done")

    for row in results:
        if original and original.latency_s and row.latency_s:
            row.speedup = original.latency_s / row.latency_s
    selected = best[0] if best else None
    if selected:
        selected.status = STATUS_SELECTED
    result = OptimizationResult(
        device=device.fingerprint(), metric=metric.name, metric_drop_ths=metric_drop_ths,
        optimization_time=optimization_time, samples=samples.describe(), candidates=results,
        original=original, selected=selected, wall_s=time.perf_counter() - started)
    return result, (best[1] if best else None)
