"""Candidate generation, verification, timing and selection.

Every candidate goes through the same steps: availability (skipped, with the reason), build plus
a first call (compilers compile there; counted as build time), verification of the metric on the
held-out inputs against the original outputs, timing. Any exception in a step marks that candidate
failed with its reason and the search goes on. The fastest candidate whose drop is within the
threshold wins; only it and the original stay in memory.

With ``optimization_time="unconstrained"`` a second phase (:func:`run_technique_search`) tries the
approximate techniques of :mod:`sdopt.techniques` on the original and on the best backend. They
change the number or the cost of UNet calls, so they are judged end to end: latency per image
and an image metric against the original pipeline's images; the fastest per image within the
threshold wins, technique or not. Constrained searches run that phase with only the techniques
that lower a component's precision (``constrained=True`` in the registry: the bf16 VAE decoder, a
fifth of the image at 512 px), on the best backend alone.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from typing import Callable, NamedTuple

import torch

from ..backends import FOREIGN_COMPILERS, load_builtin_backends
from ..backends.base import (BACKENDS, BuildContext, OptimizedModule, Variant,
                             canonical_backend_name, fp32_weights_bytes)
from ..device import DeviceInfo
from ..host_memory import available_memory_bytes
from ..errors import SdoptError
from ..techniques import (TECHNIQUES, all_specs, candidate_id, conflict_reason, label, params_of,
                          stack_reason)
from ..techniques import memory_copies as technique_memory_copies
from ..techniques import unavailable_reason as technique_unavailable
from .budget import LaterStages
from .capture import SampleSet
from .ceiling import count_flops_by_kind, gemm_rate
from .metrics import DEFAULT_AGGREGATE, LOSSLESS_TOLERANCE, METRICS, Metric, per_prompt_drops
from .ordering import Ceiling, Planner, expected_build_s, setting_bound_reason
from .selection import fastest_two, judge, ranked_end_to_end, select
from .table import (BASE_LEVEL, REFERENCE_ID, STATUS_FAILED, STATUS_OK, STATUS_SELECTED,
                    STATUS_SKIPPED, CandidateResult, OptimizationResult, set_e2e_speedup)
from .memory import PeakRss, shortfall_reason
from .timing import DeviceMemory, Timing, measure, memory_baseline

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


def _included(names, device: DeviceInfo) -> tuple[set[str], set[str]]:
    """The ``backends`` list: whole backends by name, or single variants by id
    (``torch_compile/fp16-cudagraphs``) for a search that should try only those."""
    whole, ids = [], set()
    for name in names:
        text = str(name).strip()
        if "/" not in text:
            whole.append(text)
            continue
        backend_name, variant_name = text.split("/", 1)
        backend = BACKENDS[next(iter(_canonical_list([backend_name], "backends")))]
        known = {v.name for v in backend.variants(device)}
        if variant_name not in known:
            raise SdoptError(f"backends: '{text}' is not a variant of {backend.name} on "
                             f"{device.kind} (it has: {', '.join(sorted(known))})")
        ids.add(f"{backend.name}/{variant_name}")
    return _canonical_list(whole, "backends"), ids


_COMPRESSORS = {"int8": "int8", "quantization": "int8", "dynamic_quantization": "int8",
                "fp16": "fp16", "bf16": "bf16", "half": "fp16"}


def named_variant_ids(device: DeviceInfo, backends) -> frozenset[str]:
    """The variants ``backends`` names one by one (``torch_eager/bf16``, not ``torch_eager``):
    such a variant runs even where it only runs slowly (bf16 on a CPU without bf16 units)."""
    return frozenset(_included(backends, device)[1]) if backends else frozenset()


def plan_candidates(device: DeviceInfo, *, backends=None, ignore_compilers=None,
                    ignore_compressors=None) -> list[Variant]:
    """Every variant of every registered backend, filtered by the user's include/ignore lists."""
    load_builtin_backends()
    include, include_ids = _included(backends, device) if backends else (None, set())
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
            elif name not in ignored and variant.precision not in ignored_precisions and (
                    include is None or name in include or variant.id in include_ids):
                variants.append(variant)
    return [reference] + variants


BUDGET_SPENT = "optimization time budget"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {first[:300]}{where}"


def cycling_call(module, inputs: list) -> Callable[[int], object]:
    """``call(i)``: ``module`` on the i-th of ``inputs`` (UNetInputs), cycling, as timings and
    side-by-side rounds call it."""
    def call(i):
        inp = inputs[i % len(inputs)]
        return module(inp.sample, inp.timestep, inp.encoder_hidden_states, **inp.extra)

    return call


def _time_module(module: OptimizedModule, inputs: list, device_kind: str, **kwargs) -> Timing:
    return measure(cycling_call(module, inputs), device_kind=device_kind, **kwargs)


def skip_reason(variant: Variant, device: DeviceInfo, rows: list[CandidateResult], *,
                lossless_only: bool, time_budget_s: float | None, spent_s: float,
                reserved_s: float = 0.0, named: bool = False) -> str | None:
    """Why ``variant`` is not tried (None: it is): it cannot run here (``named``, by the user:
    unless it only runs slowly here), it is lossy and only lossless candidates are allowed, the
    time budget is spent (``reserved_s`` of it is kept for the stages after the UNet's), or it
    is a fallback (or a rescue) of a variant that already passed."""
    reason = BACKENDS[variant.backend].unavailable_reason(device, variant)
    if named and device.only_slow(reason):
        reason = None
    if reason is None and lossless_only and not variant.lossless:
        reason = (f"{variant.precision} changes results and metric_drop_ths is None "
                  "(lossless only): pass metric_drop_ths to allow it")
    kept = (f", {reserved_s:.0f} s of it kept for the stages after the UNet's"
            if reserved_s >= 0.5 else "")
    if reason is None and time_budget_s is not None and spent_s > time_budget_s - reserved_s \
            and variant.id != REFERENCE_ID:
        reason = f"{BUDGET_SPENT} ({time_budget_s:.0f} s{kept}) spent"
    build_s = expected_build_s(variant, device.kind)
    if reason is None and time_budget_s is not None and build_s is not None \
            and spent_s + build_s > time_budget_s - reserved_s:
        reason = (f"does not fit the {BUDGET_SPENT}: building it takes about {build_s:.0f} s "
                  f"cold, more than the "
                  f"{max(0.0, time_budget_s - reserved_s - spent_s):.0f} s left of "
                  f"{time_budget_s:.0f} s{kept} "
                  "(raise time_budget_s or search exhaustively to try it)")
    # rescue_of: a recalibration for less error, tried only when none of those passed either
    ids = variant.related_ids("fallback_of", "rescue_of")
    if reason is None and ids:
        # A less aggressive fallback (partial int8) is tried only when the more aggressive
        # variants were rejected: it would be slower, and each NNCF calibration costs minutes
        # on sd15.
        done = next((r for r in rows if r.id in ids and r.status == STATUS_OK), None)
        if done is not None and variant.options.get("rescue_of"):
            reason = (f"{done.id} already passed the threshold; another calibration of the "
                      "same int8 layers changes the error, not the speed")
        elif done is not None:
            reason = (f"{done.id} already passed the threshold; this less aggressive "
                      "fallback would be slower")
    return reason


def host_memory_reason(copies: float | None, device: DeviceInfo,
                       weights_bytes: int) -> str | None:
    """Why a build or a technique needing ``copies`` of the fp32 weights more would not fit in
    the memory available now (None: it fits, or its need is not known). Only host memory is
    checked: on CUDA a candidate's weights are on the device, where a build that does not fit
    fails with an error the search records."""
    if device.kind != "cpu":
        return None
    return shortfall_reason(copies, weights_bytes, available_memory_bytes())


def memory_reason(variant: Variant, device: DeviceInfo, weights_bytes: int,
                  ctx: BuildContext | None = None) -> str | None:
    """:func:`host_memory_reason` of building ``variant`` with ``ctx``."""
    return host_memory_reason(BACKENDS[variant.backend].memory_copies(variant, ctx), device,
                              weights_bytes)


# The original's per-call latency is taken from the capture when it timed at least this many
# warm calls (sd15 at 4 steps: 10), instead of timing the UNet again.
MIN_CAPTURED_CALLS = 3


def _captured_timing(samples: SampleSet, variant: Variant, device: DeviceInfo) -> Timing | None:
    """The original's timing from the capture's UNet calls (the same calls, in the pipeline the
    user runs; on CPU, where the capture times them), or None: time it here. Its peak memory is
    the process's while the capture ran."""
    if variant.id != REFERENCE_ID or device.kind != "cpu":
        return None
    calls = samples.warm_call_latencies_s()
    if len(calls) < MIN_CAPTURED_CALLS:
        return None
    return Timing(calls, samples.peak_rss_bytes, "rss")


def _build(unet, variant: Variant, ctx: BuildContext, row: CandidateResult, *,
           first_call: bool = True) -> OptimizedModule:
    """Build, with a first call (compilers compile there: it counts as build time);
    ``first_call=False`` where the module already ran these shapes (the original in the
    capture)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        module = BACKENDS[variant.backend].build(unet, variant, ctx)
        module.eval()
        inputs = ctx.example
        if first_call:
            module(inputs.sample, inputs.timestep, inputs.encoder_hidden_states, **inputs.extra)
        if ctx.device.kind == "cuda":
            torch.cuda.synchronize()
    row.build_s = time.perf_counter() - t0
    row.model_size_bytes = module.size_bytes()
    return module


def _verify(module: OptimizedModule, verification, metric: Metric, device: DeviceInfo,
            row: CandidateResult) -> None:
    """The metric's drop against the original's outputs on every held-out UNet call: the mean
    over the calls, and the worst prompt's (the mean of its calls)."""
    drops = []
    with torch.inference_mode():
        for s in verification:
            inp = s.inputs.to(device.torch_device)
            out = module(inp.sample, inp.timestep, inp.encoder_hidden_states, **inp.extra)
            drops.append(float(metric.fn(s.reference.to(out.device), out)))
    row.metric_drop = sum(drops) / len(drops)
    row.metric_drop_max = max(per_prompt_drops(drops, [s.prompt_index for s in verification]))
    if not math.isfinite(row.metric_drop):
        raise FloatingPointError("non-finite outputs (NaN or inf) on verification inputs")


def run_search(unet: torch.nn.Module, samples: SampleSet, device: DeviceInfo, variants: list[Variant],
               *, metric: Metric, metric_drop_ths: float | None, optimization_time: str,
               metric_aggregate: str = DEFAULT_AGGREGATE, warmup: int = 0, repeats: int = 5,
               max_seconds_per_candidate: float = 30.0,
               time_budget_s: float | None = None, started: float | None = None,
               cache_dir=None, exhaustive: bool = False, later: LaterStages | None = None,
               named: frozenset[str] = frozenset(),
               on_candidate: Callable[[Variant, str], None] | None = None,
               evaluate: Callable[[OptimizedModule, CandidateResult], None] | None = None,
               ) -> SearchOutcome:
    """Try the variants, most promising first (:mod:`.ordering`; ``exhaustive``: all of them, in
    the given order): skip (with the reason: unavailable, lossy where only lossless is allowed,
    time budget spent, bounded out), build, verify, time, judge; a failing candidate is recorded
    with its reason and the search goes on. ``on_candidate(variant, phase)`` is told each phase
    ("start", "build", "verify", "time", "images", "done") for progress lines. Returns
    the table, the winning module and the runner-up (only they and the original stay in
    memory).

    ``later``: what runs after this stage; the time it needs with the best pick so far is kept
    out of this stage's share of ``time_budget_s``.

    ``named``: the ids the user named one by one; they run even where they only run slowly
    (bf16 without bf16 units), their rows saying so.

    ``warmup``: untimed calls before a candidate's timed ones. None by default: the original ran
    the same shapes in the capture, every other candidate in its build's first call and its
    verification (two untimed fp32 calls were 6 s of a cold sd15 search at 256 px).

    ``evaluate(module, row)``, when given, fills the row's end-to-end latency and image metrics.
    An image metric (``metric.kind == "image"``) needs it: the UNet outputs are then compared with
    ``numeric_precision`` for the record and the threshold applies to the images.
    """
    image_gate = metric.kind == "image"
    if image_gate and evaluate is None:
        raise ValueError("an image metric needs evaluate= to make and compare images")
    unet_metric = METRICS["numeric_precision"] if image_gate else metric
    started = time.perf_counter() if started is None else started  # the budget counts from it
    timing_inputs = [s.inputs.to(device.torch_device) for s in samples.verification[:3]]
    ctx = BuildContext(device=device, example=timing_inputs[0],
                       calibration=[s.inputs for s in samples.calibration], cache_dir=cache_dir,
                       calibration_ranges=samples.calibration_ranges())
    ths = LOSSLESS_TOLERANCE if metric_drop_ths is None else metric_drop_ths
    notify = on_candidate or (lambda variant, phase: None)
    rows: list[CandidateResult] = []
    planner = Planner(variants, device, rows, exhaustive=exhaustive)
    weights_bytes = fp32_weights_bytes(unet)
    leaders: list[tuple[CandidateResult, OptimizedModule]] = []  # the two fastest passing
    original: CandidateResult | None = None
    # On CUDA: the device memory each candidate adds, TensorRT's and ONNX Runtime's included.
    device_memory = DeviceMemory.open() if device.kind == "cuda" else None
    for variant in planner:
        row = CandidateResult(variant.id, variant.backend, variant.name, variant.precision,
                              list(BACKENDS[variant.backend].techniques_for(variant, unet)),
                              STATUS_SKIPPED,
                              batch=int(timing_inputs[0].sample.shape[0]))
        rows.append(row)
        notify(variant, "start")
        reserved_s = 0.0
        # Only once a candidate beats the original: until then the UNet stage is where the gain
        # is, and the fp32 pipeline's slow images would make the reserve its largest (a cold sd15
        # search kept 300 s and skipped int8-inner, a 7 s derivation, for the components).
        if later is not None and time_budget_s is not None and original is not None \
                and leaders and leaders[0][0] is not original:
            reserved_s = later.reserve_s(original.latency_s, leaders[0][0].latency_s,
                                         time_budget_s)
        row.reason = skip_reason(variant, device, rows, lossless_only=metric_drop_ths is None,
                                 time_budget_s=time_budget_s,
                                 spent_s=time.perf_counter() - started,
                                 reserved_s=reserved_s, named=variant.id in named) \
            or BACKENDS[variant.backend].model_reason(variant, unet) \
            or planner.bound_reason(variant) \
            or memory_reason(variant, device, weights_bytes, ctx) or ""
        module = None
        if not row.reason:
            span = PeakRss().start()  # the candidate's peak memory, build to images
            try:
                notify(variant, "build")
                memory = memory_baseline(device_memory) if device_memory is not None else None
                captured = _captured_timing(samples, variant, device)
                module = _build(unet, variant, ctx, row, first_call=captured is None)
                if variant.id == REFERENCE_ID:
                    # The held-out outputs were recorded from this very module: no drop, and
                    # eight fp32 calls (18 s on sd15 at 256 px) saved.
                    row.metric_drop = row.metric_drop_max = 0.0
                else:
                    notify(variant, "verify")
                    _verify(module, samples.verification, unet_metric, device, row)
                notify(variant, "time")
                timing = captured or _time_module(
                    module, timing_inputs, device.kind, warmup=warmup, repeats=repeats,
                    max_seconds=max_seconds_per_candidate, memory=memory)
                row.latency_s, row.latency_iqr_s = timing.median_s, timing.iqr_s
                row.latency_samples_s = timing.samples_s
                row.peak_memory_bytes = timing.peak_memory_bytes
                row.memory_kind = timing.memory_kind
                if original is not None:
                    row.speedup = original.latency_s / row.latency_s
                if evaluate is not None:
                    notify(variant, "images")
                    evaluate(module, row)
                judge(row, metric.name, ths, metric_aggregate, images=image_gate)
                slow = BACKENDS[variant.backend].unavailable_reason(device, variant)
                if device.only_slow(slow) and not row.reason:
                    row.reason = f"named in backends, so run though it is slow here: {slow}"
            except Exception as exc:  # noqa: BLE001 - a failing candidate never stops the search
                row.status, row.reason = STATUS_FAILED, _describe(exc)
                if variant.id == REFERENCE_ID:
                    raise SdoptError(f"the original UNet failed to run: {row.reason}") from exc
            finally:
                row.peak_rss_bytes = span.stop()
            if variant.id == REFERENCE_ID and row.status == STATUS_OK:
                original, row.speedup = row, 1.0
                if not exhaustive:
                    planner.ceiling = _ceiling(module, timing_inputs[0], device, row)
            if row.status == STATUS_OK:
                leaders = fastest_two(leaders, (row, module))  # the rest are released below
            del module
            gc.collect()
        notify(variant, "done")

    for row in rows:
        set_e2e_speedup(row, original)
    result = OptimizationResult(
        device=device.fingerprint(), metric=metric.name, metric_drop_ths=metric_drop_ths,
        optimization_time=optimization_time, samples=samples.describe(), candidates=rows,
        original=original, selected=None, wall_s=time.perf_counter() - started,
        image_metric=metric.name if image_gate else None, metric_aggregate=metric_aggregate)
    if any(r.reason.startswith(BUDGET_SPENT) for r in rows):
        result.notes.append(f"the time budget ({time_budget_s:.0f} s) stopped the search: the "
                            "pick is the best found until then")
    if leaders:
        select(result, leaders[0][0])
    return SearchOutcome(result, leaders[0][1] if leaders else None,
                         leaders[1] if len(leaders) > 1 else None)


class SearchOutcome(NamedTuple):
    result: OptimizationResult
    module: OptimizedModule | None  # the pick's
    runner_up: tuple[CandidateResult, OptimizedModule] | None  # the second fastest passing


def _ceiling(module: OptimizedModule, inputs, device: DeviceInfo, row: CandidateResult) -> Ceiling:
    """The roofline's inputs: the reference call's work, counted on one more call when a bound
    first needs it."""
    return Ceiling(lambda: count_flops_by_kind(lambda: module(inputs.sample, inputs.timestep,
                                                      inputs.encoder_hidden_states,
                                                      **inputs.extra)),
                   row.latency_s,
                   lambda precision: gemm_rate(precision, device.torch_device))


# The constrained phase keeps a lower-precision component only when the image gets this much
# faster, and faster in most rounds (the first quartile of the per-round savings above zero): at
# 512 px the bf16 VAE decoder saves about 7 s of 60, on a tiny test pipeline nothing but noise.
# With 3% the sd15 search at 256 px dropped the OpenVINO text encoder, which saved 0.167 s (2.9%)
# per image in 7 of 7 rounds, and its pick ran 0.94x the exhaustive search's per image (Zen 4,
# 2026-12-02): the quartile, not the share, is what tells a saving from noise.
CONSTRAINED_MIN_GAIN = 0.01
# A setting whose first two rounds both save (or both lose) this share of the image is decided:
# its replays stop there. sd15's bf16 VAE decoder saves about 20% of the image at 256 px, in
# rounds of 3.4 s; the OpenVINO text encoder's 3% (rounds of 0.5 s) takes its three rounds or more.
DECISIVE_ROUND_GAIN = 5 * CONSTRAINED_MIN_GAIN


def planned_settings(device: DeviceInfo, *, constrained: bool, bases: int) -> int:
    """How many rows :func:`run_technique_search` will evaluate at most: each setting that can
    run on this device once per base, then one stack per further technique."""
    runnable = [s for s in all_specs(constrained_only=constrained)
                if TECHNIQUES[s["name"]].setting_reason(params_of(s), device) is None]
    return bases * len(runnable) + max(0, len({s["name"] for s in runnable}) - 1)


def run_technique_search(
        result: OptimizationResult, bases: list[tuple[CandidateResult, OptimizedModule]],
        device: DeviceInfo, *, metric_drop_ths: float | None, image_metric: str,
        metric_aggregate: str = DEFAULT_AGGREGATE,
        evaluate: Callable[[OptimizedModule, list[dict], CandidateResult, list[dict]], None],
        time_budget_s: float | None = None, started: float | None = None,
        on_candidate: Callable[[str, str], None] | None = None,
        constrained: bool = False, component_s: dict[str, float] | None = None,
        unet_image_s: float | None = None, weights_bytes: int = 0,
) -> list[tuple[CandidateResult, list[dict]]]:
    """The technique phase: every technique setting alone on each base (unconstrained: the
    original and the best backend), then the best passing setting of each technique stacked
    greedily on the best base while the stack stays within the threshold and gets faster.
    Constrained (the best backend, precision techniques only): each setting in turn on what was
    kept so far (:func:`_accumulate_settings`). Rows are appended to ``result.candidates``;
    returns the passing (row, specs), bases included, fastest per image first (empty when no
    base has an end-to-end latency).

    ``evaluate(module, specs, row, alongside)`` fills ``row``: unconstrained, with the images
    and times of ``module`` with ``specs``; constrained, with the seconds per image they save
    over ``module`` with the ``alongside`` specs (the stack kept so far), timed side by side
    (``row.paired[BASE_LEVEL]``, :func:`components.setting_saving`; its ``decisive_s`` keyword:
    the per-round saving that settles the keeping rule in two rounds); the stack is judged on its
    images later, in the side-by-side rounds with the original. ``unet_image_s``
    (constrained): the last base's UNet calls of one image at its timed latency per call,
    which with ``component_s`` (each component's fp32 seconds per image, the capture's)
    estimates the time per image the savings are weighed against. ``weights_bytes``: the
    denoiser's fp32 weights, in which a technique's measured memory need is given (0: not
    checked)."""
    started = time.perf_counter() if started is None else started
    ths = metric_drop_ths
    passing: list[tuple[CandidateResult, list[dict], int]] = []  # row, specs, base index
    times: dict[str, float] = {}  # constrained: each kept row's estimated time per image

    def attempt(base_index: int, specs: list[dict], alongside: list[dict] | None = None,
                on: tuple[str, float | None] | None = None,
                skip: str | None = None) -> CandidateResult:
        """``specs`` on base ``base_index``; constrained: ``alongside``, the specs kept so far,
        and ``on``, the (id, time per image) of what they make; ``skip``: why not to try it."""
        base_row, base_module = bases[base_index]
        row = CandidateResult(
            candidate_id(base_row.id, specs), base_row.backend, base_row.variant,
            base_row.precision, list(base_row.techniques) + [label(s) for s in specs],
            STATUS_SKIPPED, batch=base_row.batch, pipeline_techniques=[dict(s) for s in specs],
            model_size_bytes=base_row.model_size_bytes)
        if all(TECHNIQUES[s["name"]].constrained for s in specs):
            # Another component's precision: the UNet and its calls are the base's.
            for name in ("latency_s", "latency_iqr_s", "latency_samples_s", "metric_drop",
                         "metric_drop_max", "speedup", "peak_memory_bytes"):
                setattr(row, name, getattr(base_row, name))
            # and so is the UNet's side-by-side figure, which the summary reports for the pick
            if "unet" in base_row.paired:
                row.paired["unet"] = dict(base_row.paired["unet"])
        result.candidates.append(row)
        if on_candidate:
            on_candidate(row.id, "start")
        reason = next((r for r in (technique_unavailable(s, base_module, device) for s in specs)
                       if r), None)
        if reason is None and ths is None:
            reason = (f"{'lower precision' if constrained else 'approximate technique'} and "
                      "metric_drop_ths is None (lossless only): pass metric_drop_ths to allow it")
        if reason is None and time_budget_s is not None \
                and time.perf_counter() - started > time_budget_s:
            reason = f"{BUDGET_SPENT} ({time_budget_s:.0f} s) spent"
        reason = reason or skip or host_memory_reason(
            technique_memory_copies(specs, base_module), device, weights_bytes)
        if reason is None and constrained:
            measured = {s[-1]["name"]: (r.id, times[r.id]) for r, s, i in passing
                        if times.get(r.id)}
            reason = setting_bound_reason(
                specs[-1]["name"], TECHNIQUES[specs[-1]["name"]].component,
                on[1] if on else None, component_s or {}, measured, CONSTRAINED_MIN_GAIN)
        if reason:
            row.reason = reason
        else:
            span = PeakRss().start()
            try:
                t0 = time.perf_counter()
                if constrained:
                    # the per-round saving past which more rounds cannot change the keeping rule
                    decisive_s = DECISIVE_ROUND_GAIN * on[1] if on and on[1] else None
                    evaluate(base_module, specs, row, list(alongside or []), decisive_s=decisive_s)
                else:
                    evaluate(base_module, specs, row, list(alongside or []))
                timed = row.e2e_latency_samples_s or []
                row.build_s = time.perf_counter() - t0 - sum(timed)
                if constrained:
                    row.status = STATUS_OK  # its images are judged with the stack's
                else:
                    judge(row, image_metric, ths, metric_aggregate, images=True,
                          suffix=" (images)")
                    set_e2e_speedup(row, result.original)
                if row.status == STATUS_OK:
                    passing.append((row, specs, base_index))
            except Exception as exc:  # noqa: BLE001 - a failing candidate never stops the search
                row.status = STATUS_FAILED
                row.reason = _describe(exc)
            row.peak_rss_bytes = span.stop()
            gc.collect()
        if on_candidate:
            on_candidate(row.id, "done")
        return row

    if constrained:
        if bases[-1][0].status not in (STATUS_OK, STATUS_SELECTED):
            return []
        return _accumulate_settings(bases, attempt, times, unet_image_s, component_s or {})

    for base_index in range(len(bases)):
        for spec in all_specs(constrained_only=constrained):
            attempt(base_index, [spec])

    for base_row, base_module in bases:
        if base_row.e2e_latency_s is None:
            evaluate(base_module, [], base_row, [])
            set_e2e_speedup(base_row, result.original)

    # Stack: the best passing setting of each technique, on the best base, greedily.
    best_base = len(bases) - 1

    singles: dict[str, tuple[CandidateResult, dict]] = {}
    for row, specs, base_index in passing:
        if base_index == best_base:
            name = specs[0]["name"]
            if name not in singles or row.e2e_latency_s < singles[name][0].e2e_latency_s:
                singles[name] = (row, specs[0])
    ordered = sorted(singles.values(), key=lambda rs: rs[0].e2e_latency_s)
    if len(ordered) >= 2:
        stack_row, stack = ordered[0][0], [ordered[0][1]]
        for _, spec in ordered[1:]:
            if conflict_reason(stack + [spec]):
                continue  # it replaces a component the stack already replaced (the VAE)
            row = attempt(best_base, stack + [spec],
                          skip=stack_reason(stack + [spec], bases[best_base][1]))
            if row.status == STATUS_OK and row.e2e_latency_s < stack_row.e2e_latency_s:
                stack_row, stack = row, stack + [spec]

    contenders: list[tuple[CandidateResult, list[dict]]] = [
        (r, []) for r, _ in bases if r.e2e_latency_s and r.status in (STATUS_OK, STATUS_SELECTED)]
    contenders += [(r, s) for r, s, _ in passing]
    return ranked_end_to_end(contenders)


def _accumulate_settings(bases, attempt, times: dict[str, float], unet_image_s: float | None,
                         component_s: dict[str, float]):
    """The constrained phase: each setting in turn on the stack kept so far (the base's first),
    timed side by side with that stack on one image's calls into its component
    (:mod:`components`) and kept when it saves time in most rounds (the first quartile of the
    per-round savings above zero) and the seconds it saves per image are CONSTRAINED_MIN_GAIN of
    the stack's time per image. The settings replace different components, whose gains add
    up: trying each alone and stacking the passing ones afterwards made the sd15 search (256 px)
    time three pipelines where two decide. No images are made here: the stack kept last is
    judged on every prompt's image in the side-by-side rounds with the original, and the one
    before it when it fails (the runner walks the returned list). Returns the kept stacks, most
    settings (fastest) first, the base last.

    The stack's time per image is estimated as its UNet calls (``unet_image_s``) plus each
    component's time as last measured: side by side in a setting's replays where one ran, else
    the capture's fp32 time. On sd15 at 256 px this gave 7.0 s and 5.3 s for the pick and the
    pick with the OpenVINO VAE, where the final rounds and the savings put them at 7.5 s and
    5.8 s; the original's image scaled by the UNet's ratio per call gave 9.8 s for 6.8 s (the
    capture ran the fp32 pipeline at 21-23 s per image, the final rounds at 16-18 s, minutes
    later in the same process) and dropped the text encoder's 0.19 s as 2.3%."""
    base_row, _ = bases[-1]
    parts = dict(component_s)  # each component's seconds per image in the kept stack

    def stack_s(measured: dict[str, float] | None = None) -> float | None:
        if unet_image_s is None:
            return None
        return unet_image_s + sum({**parts, **(measured or {})}.values())

    chain: list[tuple[CandidateResult, list[dict]]] = [(base_row, [])]
    times[base_row.id] = stack_s()
    for spec in all_specs(constrained_only=True):
        on_row, kept = chain[-1]
        conflict = conflict_reason(kept + [spec])
        if conflict:  # its row is the setting alone, not tried
            attempt(len(bases) - 1, [spec], skip=f"{conflict}, and {on_row.id} was kept")
            continue
        row = attempt(len(bases) - 1, kept + [spec], alongside=kept, on=(on_row.id, stack_s()))
        if row.status != STATUS_OK:
            continue
        component = TECHNIQUES[spec["name"]].component
        saving = row.paired[BASE_LEVEL]
        saved = saving["saved_s"]
        # the stack's component as timed just now, side by side
        on_s = stack_s({component: saving["reference_latency_s"]})
        how = (f"side by side with {on_row.id}, {saving['rounds']} rounds of one image's "
               f"{component.replace('_', ' ')} calls")
        if on_s:
            times[row.id] = on_s - saved
        share = f", {saved / on_s:.1%} of its estimated {on_s:.2f} s per image" if on_s else ""
        # A lower precision has to pay for itself, in most rounds: within the noise it goes.
        if saving["q1"] <= 0.0:
            row.reason = (f"saves {saved:.3f} s per image ({how}{share}), but not in most rounds "
                          f"(first quartile {saving['q1']:+.3f} s): a lower precision must save "
                          "time in three rounds of four")
        elif saved < CONSTRAINED_MIN_GAIN * (on_s or 0.0):
            row.reason = (f"saves {saved:.3f} s per image ({how}{share}): less than the "
                          f"{CONSTRAINED_MIN_GAIN:.0%} gain that a lower precision must buy")
        else:
            parts[component] = saving["latency_s"]
            chain.append((row, kept + [spec]))
    return chain[::-1]
