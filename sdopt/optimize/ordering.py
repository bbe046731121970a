"""Which candidate the search tries next, and which it need not try at all.

A cold search spent most of its time on candidates that could not win: the registry's order put
torch first, so two torch.compile builds (65-77 s each on a 5 MB model) ran before the int8
candidate that won at 6x. Here the candidates are tried most promising first (a prior speedup per
device kind, backend and variant, refined by what this search has measured of the same backend),
and a candidate is skipped, with the reason in the table, when a cheap bound says it cannot beat
the best so far by :data:`SKIP_MARGIN`:

- the precision's **roofline**: a call cannot take less than its floating-point work at the rate of
  a large GEMM in that precision, measured on this machine, times :data:`ROOFLINE_HEADROOM` (other
  runtimes' kernels, fused attention and cheaper convolution algorithms can beat torch's GEMM);
- the **compile gain**: a compiler of torch code (torch.compile) speeds up the same precision's
  eager module, measured earlier in this search, by at most :data:`MAX_COMPILE_GAIN`;
- the **fallback's parent**: a less aggressive fallback (partial int8) keeps more of the network
  in floating point than the variants it falls back from, so it is no faster than they measured.
- the **slower runtime**: ONNX Runtime's int8 (static and dynamic) quantizes layers OpenVINO's int8
  does and ran slower than it on every CPU measured, so it is bounded by OpenVINO's measured int8;
  its fp32 runs the graph OpenVINO's fp32 runs, at most 1.21x as fast, and is bounded by it;
  torch's eager channels_last modules and torch.compile by OpenVINO's measured module of the
  same precision (the plain bf16 eager module stays: it is torch.compile's probe); on a CPU
  without VNNI, OpenVINO's int8 variants that quantize MatMuls and attention by its
  convolution-only int8 (:data:`SLOWER_WITHOUT_VNNI`);
- the **float part's roofline**: an int8 variant that leaves whole kinds of layers in floating
  point (torch's dynamic int8 quantizes only the linear layers) cannot beat those layers' work
  at that precision's roofline;
- the **same graph**: a variant that calibrates the same int8 graph as one measured already
  (OpenVINO's NNCF calibration after its min/max twin) differs in error, not in speed, so it is no
  faster than that twin measured; it is built only when the twin was rejected and could still win.

A probe (the int8 graph calibrated on one sample, timed before the full calibration) was tried and
removed: on sd15 at 256 px a calibration's cost does not scale with its samples. ONNX Runtime's
static probe took 122 s against 106 s for the full build, and 92 s of NNCF's 189 s is compiling
its statistics model once (1797 extra outputs), whatever the sample count.

``exhaustive=True`` keeps the registry's order and skips nothing by bound: the old search, for
comparing picks and for users who want every row measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..backends.base import Variant
from ..device import DeviceInfo
from .table import REFERENCE_ID, STATUS_OK, STATUS_SELECTED, CandidateResult

# A candidate is built only when it could beat the best so far by at least this much: the search's
# own timings move by a few percent between runs, so a smaller gain could not be told from noise.
SKIP_MARGIN = 0.05
# How far a candidate may beat torch's large-GEMM rate in its precision (other libraries' kernels,
# fused attention, cheaper convolution algorithms). Measured on sd15 at 256 px (343 GFLOP per
# call, Zen 4, docs: DESIGN.md section 5): fp32 eager ran at 0.82 of torch's fp32 GEMM rate, the
# best bf16 backends at 0.82 of the bf16 rate, ONNX Runtime fp32 (1.5x eager) at 1.23 of it.
ROOFLINE_HEADROOM = 1.5
# torch.compile over the eager module of the same precision, per device kind. CUDA: 1.2x for
# SD 1.5 on an H100 in stable-fast's table (66.0 vs 54.5 it/s, max-autotune), bounded at 2x.
# CPU: 0.6-1.3x on this project's CPUs; on the sd15 UNet at 256 px (Intel AMX, 2026-12-01,
# results/search_cold_sd15.json) compiling was slower than eager in every case (bf16 0.50x and
# 0.75x, fp32 0.86x), on tiny 1.05-1.08x (results/search_cold_tiny.json). A bound of 1.5x keeps
# a 100 s compile out of a search whose best already beats eager by that much.
MAX_COMPILE_GAIN = {"cuda": 2.0, "cpu": 1.5}
DEFAULT_COMPILE_GAIN = 2.0  # another device kind: the loosest bound
# With CUDA graphs the launches go too, which for small calls can be half of eager's time:
# fp16-cudagraphs ran the SD 1.5 UNet (512 px, batch 2) at 2.96x fp16-channels_last eager on an
# H200 (7.26 vs 21.5 ms, benchmarks/results/gpu/gpu_peers_sd15_512.json).
MAX_CUDAGRAPH_GAIN = 4.0
COMPILERS_OF_EAGER = {"torch_compile": "torch_eager"}
# Another runtime's int8 of the same layers, per device kind: candidate id -> (the ids it is
# bounded by, the most it ran at against them, why). ONNX Runtime's static int8 (QDQ convolutions
# and matmuls, the layers OpenVINO's full int8 quantizes) ran at 0.37-0.82x OpenVINO's int8: 0.82x
# on sd15 at 256 px on Zen 4 (results/compiler_backends.json, 2.67x vs 3.25x), 0.51x on sd15 and
# 0.37-0.52x on tiny on an Intel AMX Xeon (results/search_cold_*.json, 2026-12-01); its dynamic
# int8 (a subset of those layers, scales computed per call) at 0.37-0.61x (0.45x on Zen 4). The
# bound leaves headroom above the highest.
_OPENVINO_INT8 = ("openvino/int8-minmax", "openvino/int8")
_ORT_INT8_WHY = ("ONNX Runtime's int8 kernels ran at 0.37-0.82x OpenVINO's on the same int8 "
                 "layers on every CPU with VNNI measured")
# ONNX Runtime's fp32 runs the same fp32 graph as OpenVINO's fp32 (MLAS against oneDNN kernels):
# 1.03x it on sd15 at 256 px on Zen 4 (results/compiler_backends.json, 1.23x vs 1.20x), 1.21x on
# sd15 and 0.87x on tiny on an Intel AMX Xeon (results/search_cold_*.json, 2026-12-01). OpenVINO's
# fp32 reuses the IR its int8 converted (under a second on tiny), where ONNX Runtime's export
# takes 12-45 s, so OpenVINO's is timed first and bounds it.
_ORT_FP32_WHY = ("ONNX Runtime's fp32 ran at 0.87-1.21x OpenVINO's fp32 of the same graph on "
                 "every CPU measured")
# torch's eager kernels against OpenVINO's of the same precision: bf16 (with or without
# channels_last) ran at 0.75-0.77x OpenVINO's bf16 on sd15 on Zen 4 (results/
# compiler_backends.json), 0.58-0.61x on sd15 and 0.33-0.39x on tiny on an Intel AMX Xeon
# (results/search_cold_*.json, exhaustive runs); fp32 channels_last at 0.79x, 0.72x and 0.50x
# OpenVINO's fp32. torch.compile gains at most MAX_COMPILE_GAIN (1.5x) over those eager modules,
# so it is bounded by 0.9 x 1.5 of OpenVINO's (measured: 0.91x on sd15, 0.78x on tiny for bf16;
# 0.68x and 0.65x for fp32). That bound is loose (OpenVINO's bf16, the best on tiny, lets a 77 s
# compile through), so plain torch_eager/bf16 stays unbounded by it: a one-second probe whose
# measured speed x 1.5 is the tight bound of compiling it.
_TORCH_EAGER_AT_MOST = 0.9
_TORCH_COMPILE_AT_MOST = _TORCH_EAGER_AT_MOST * MAX_COMPILE_GAIN["cpu"]
_TORCH_WHY = ("torch's eager {p} ran at 0.33-0.79x OpenVINO's {p} on every CPU measured")
_COMPILE_WHY = (f"torch.compile gains at most {MAX_COMPILE_GAIN['cpu']:g}x over torch's eager "
                "{p}, which ran at 0.33-0.79x OpenVINO's {p} on every CPU measured")
SLOWER_RUNTIME = {
    "cpu": {"onnxruntime/int8-static": (_OPENVINO_INT8, 0.9, _ORT_INT8_WHY),
            "onnxruntime/int8-dynamic": (_OPENVINO_INT8, 0.9, _ORT_INT8_WHY),
            "onnxruntime/fp32": (("openvino/fp32",), 1.4, _ORT_FP32_WHY),
            "torch_eager/bf16-channels_last": (("openvino/bf16",), _TORCH_EAGER_AT_MOST,
                                               _TORCH_WHY.format(p="bf16")),
            "torch_eager/fp32-channels_last": (("openvino/fp32",), _TORCH_EAGER_AT_MOST,
                                               _TORCH_WHY.format(p="fp32")),
            "torch_compile/bf16": (("openvino/bf16",), _TORCH_COMPILE_AT_MOST,
                                   _COMPILE_WHY.format(p="bf16")),
            "torch_compile/fp32": (("openvino/fp32",), _TORCH_COMPILE_AT_MOST,
                                   _COMPILE_WHY.format(p="fp32"))},
}


# A component setting (a constrained technique: another precision or runtime for the VAE decoder
# or the text encoders) is tried only when it could buy what it must: CONSTRAINED_MIN_GAIN of
# its base's image (search.CONSTRAINED_MIN_GAIN, passed in), and more than a setting of the same
# component measured already. Torch's bf16 VAE decoder against OpenVINO's bf16 one: the same
# kernels' kind as the UNets above (_TORCH_EAGER_AT_MOST); on sd15 at 256 px the image with the
# OpenVINO decoder was 5.11x fp32 eager against 4.65x with torch's bf16 one, the same int8 UNet
# (exhaustive search, 2026-12-01).
SLOWER_SETTING = {"vae_bf16": ("vae_openvino", _TORCH_EAGER_AT_MOST,
                               "torch's eager bf16 ran at 0.33-0.79x OpenVINO's bf16 on every "
                               "CPU measured")}


def setting_bound_reason(name: str, component: str | None, base_s: float | None,
                         component_s: dict[str, float], measured: dict[str, tuple[str, float]],
                         min_gain: float) -> str | None:
    """Why the component setting of technique ``name`` (replacing ``component``) cannot pay for
    itself on a base taking ``base_s`` per image (None: it might). ``component_s``: each
    component's fp32 seconds per image (timed in the capture); ``measured``: technique name ->
    (row id, time per image) of the settings that passed on this base."""
    seconds = component_s.get(component or "")
    if not base_s or seconds is None:
        return None
    where = f"the {component.replace('_', ' ')} takes {seconds:.2f} s of its base's {base_s:.2f} s"
    if seconds < min_gain * base_s:
        return (f"{where} per image in fp32 (timed in the capture): even free it would save "
                f"{seconds / base_s:.1%}, less than the {min_gain:.0%} a lower precision must "
                "buy")
    slower = SLOWER_SETTING.get(name)
    if slower and slower[0] in measured:
        faster_id, faster_s = measured[slower[0]]
        faster_component_s = max(0.0, seconds - (base_s - faster_s))
        fastest_s = base_s - seconds + faster_component_s / slower[1]
        if faster_s / fastest_s < 1.0 + SKIP_MARGIN:
            return (f"cannot beat {faster_id} ({faster_s:.2f} s per image) by {SKIP_MARGIN:.0%}: "
                    f"{where}, {faster_component_s:.2f} s with {slower[0]}, and {slower[2]} "
                    f"(at most {slower[1]:g}x of it): at least {fastest_s:.2f} s per image")
    return None


# On a CPU without VNNI (a GitHub runner's Zen 3, Ice Lake aside) int8 MatMuls run slower than
# float ones and int8 attention runs decomposed, so the int8 variants that quantize them are
# bounded by the convolution-only ones offered only there (OpenVINO._without_vnni): sd15 at
# 256 px on a Zen 3, int8-inner-minmax ran at 0.88x and 0.91x int8-conv-minmax side by side
# (results/int8_float_scope_sd15_256_zen3.json); full int8 quantizes the same MatMuls and
# attention. The bound leaves headroom above them.
_CONV_INT8 = ("openvino/int8-conv-minmax", "openvino/int8-conv-nncf")
_NO_VNNI_WHY = ("without VNNI int8 MatMuls and attention ran slower than float ones, and the "
                "convolution-only int8 ran 1.10-1.14x int8-inner-minmax on a Zen 3")
SLOWER_WITHOUT_VNNI = {f"openvino/{name}": (_CONV_INT8, 1.0, _NO_VNNI_WHY)
                       for name in ("int8-minmax", "int8-inner-minmax", "int8", "int8-inner")}
# And there ONNX Runtime's static int8 is not slower than OpenVINO's: 1.03x int8-conv-minmax and
# 1.08x int8-inner-minmax side by side, sd15 at 256 px on a Zen 3 (with 1.7x the error: worst
# drop 0.094; results/int8_ort_vs_conv_sd15_256_zen3.json), so SLOWER_RUNTIME's bound, measured
# on VNNI CPUs, does not apply.
UNBOUNDED_WITHOUT_VNNI = {"onnxruntime/int8-static"}


def slower_runtime(variant: Variant,
                   device: DeviceInfo) -> tuple[tuple[str, ...], float, str] | None:
    """(the ids ``variant`` is bounded by, the most it runs at against them, why) or None."""
    if device.kind == "cpu" and not device.has_vnni():
        if variant.id in UNBOUNDED_WITHOUT_VNNI:
            return None
        if variant.id in SLOWER_WITHOUT_VNNI:
            return SLOWER_WITHOUT_VNNI[variant.id]
    return SLOWER_RUNTIME.get(device.kind, {}).get(variant.id)


def eager_counterpart(variant: Variant, device_kind: str) -> tuple[str, float] | None:
    """(the eager variant a compiled ``variant`` is bounded by, the most compiling gains on
    ``device_kind``)."""
    eager = COMPILERS_OF_EAGER.get(variant.backend)
    if not eager:
        return None
    opts = variant.options or {}
    if "mode" not in opts:
        return f"{eager}/{variant.name}", MAX_COMPILE_GAIN.get(device_kind, DEFAULT_COMPILE_GAIN)
    layout = "-channels_last" if opts.get("channels_last") else ""
    return f"{eager}/{variant.precision}{layout}", MAX_CUDAGRAPH_GAIN

# Expected UNet speedup over fp32 eager, per device kind and candidate id. CPU: the paired and
# sequential figures of benchmarks/results/unet_speedup.json and compiler_backends.json (sd15,
# 256 px, 2 Zen 4 cores). CUDA: fp16 eager about 3x fp32 eager on Hopper, torch.compile 1.2x
# fp16 eager, TensorRT 1.9x (public SD 1.5 benchmarks); CUDA graphs and diffusers' recipe 1.5-1.9x
# fp16 eager (stable-fast's table), the cheap-to-compile CUDA graphs variant first. Only the order depends on them; a wrong
# prior costs time, never the pick.
PRIORS: dict[str, dict[str, float]] = {
    "cpu": {
        # offered only on CPUs without VNNI, where it ran 1.10-1.14x int8-inner-minmax; its
        # NNCF twin waits for it (a rescue) and is tried before the variants it bounds
        "openvino/int8-conv-minmax": 4.8, "openvino/int8-conv-nncf": 4.8,
        "openvino/int8-minmax": 4.7, "openvino/int8-inner-minmax": 4.7,
        "openvino/int8": 4.7, "openvino/int8-inner": 4.7, "onnxruntime/int8-static": 3.1,
        "openvino/int8-matmul": 3.05, "openvino/int8-conv": 3.0, "openvino/int8-weights": 2.9,
        "openvino/bf16": 2.8,
        "torch_eager/bf16-channels_last": 2.08, "torch_eager/bf16": 2.0,
        "torch_compile/bf16": 1.93, "onnxruntime/int8-dynamic": 1.75, "openvino/fp32": 1.45,
        "onnxruntime/fp32": 1.36, "torch_int8/dynamic-linear": 1.2,
        "torch_eager/fp32-channels_last": 0.96, "torch_compile/fp32": 0.64,
    },
    "cuda": {
        "tensorrt/fp16": 5.7, "onnxruntime/tensorrt-fp16": 5.0,
        # fp8 linear layers on the CUDA-graphs recipe: unmeasured (no fp8 GPU lent yet); its
        # transformer-block GEMMs at twice bf16's tensor-core rate
        "torch_compile/fp8-cudagraphs": 4.5,
        "torch_compile/fp16-cudagraphs": 4.4, "torch_compile/fp16-max-autotune": 4.3,
        "torch_compile/fp16": 3.6,
        "torch_compile/bf16": 3.5, "torch_eager/fp16-channels_last": 3.1,
        "torch_eager/fp16": 3.0, "torch_eager/bf16-channels_last": 2.95,
        "torch_eager/bf16": 2.9, "onnxruntime/cuda-fp16": 2.5, "torch_compile/fp32": 1.2,
        "torch_eager/fp32-channels_last": 1.0,
    },
}
# Cold build times long enough to matter against a time budget, per device kind and candidate
# id. torch.compile max-autotune of the SD 1.5 UNet at 512 px on an H200 (16 CPU cores)
# autotunes every GEMM and convolution: diffusers' recipe (UNet and VAE decoder) had not finished
# after 310 s, nor after another 265 s with the first try's autotune cache
# (benchmarks/results/gpu/gpu_peers_sd15_512.json, 2026-12-01), and without coordinate descent
# it had not finished after 457 s (gpu_peers_sd15_512_recipe_no_cd_attempt.json, 2026-12-04),
# against 44-66 s for fp16-cudagraphs. 600 s is a lower bound.
BUILD_S: dict[str, dict[str, float]] = {
    "cuda": {"torch_compile/fp16-max-autotune": 600.0},
}


# An int8 variant that leaves layers in floating point: their precision and kinds
# (ceiling.count_flops_by_kind), whose roofline bounds it as a float variant's bounds it. torch's
# dynamic int8 quantizes nn.Linear only: the convolutions (65% of sd15's counted work at 256 px)
# and attention stay fp32 eager. A cold sd15 search built it for 31 s when the budget allowed,
# at 1.2x against an int8 pick at 3.9x.
FLOAT_WORK: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch_int8/dynamic-linear": ("fp32", ("convolution", "attention", "other")),
}


def expected_build_s(variant: Variant, device_kind: str) -> float | None:
    return BUILD_S.get(device_kind, {}).get(variant.id)


# For a candidate the table does not know (a plugin backend): by its precision.
PRECISION_PRIORS = {"int8": 3.0, "fp16": 2.5, "bf16": 2.0, "fp32": 1.0}


def prior(variant: Variant, device_kind: str) -> float:
    known = PRIORS.get(device_kind, {})
    return known.get(variant.id, PRECISION_PRIORS.get(variant.precision, 1.0))


@dataclass
class Ceiling:
    """The roofline's inputs: the reference call's work and GEMM rates, measured on demand (a
    search whose remaining candidates are all int8, or bounded otherwise, never pays for them:
    counting the work is one more fp32 call, 5 s on sd15 at 256 px)."""

    # FLOP per call, in all or per kind of layer (ceiling.count_flops_by_kind), or how to count
    # them, once
    flops: int | dict[str, int] | Callable[[], int | dict[str, int]]
    reference_latency_s: float
    rate_of: Callable[[str], float | None]  # precision -> FLOP/s (measured once, cached)
    rates: dict[str, float | None] = field(default_factory=dict)

    def work(self, kinds: tuple[str, ...] | None = None) -> int | None:
        """FLOP of one reference call (counted on the first use), or of its ``kinds`` of layer
        (None: not counted per kind)."""
        if callable(self.flops):
            self.flops = self.flops()
        if isinstance(self.flops, dict):
            return sum(n for k, n in self.flops.items() if kinds is None or k in kinds)
        return self.flops if kinds is None else None

    def bound(self, precision: str,
              kinds: tuple[str, ...] | None = None) -> tuple[float, str] | None:
        """(the highest speedup over the reference a ``precision`` candidate can reach, why);
        ``kinds``: only those layers' work runs in ``precision`` (the rest costs nothing here)."""
        if precision not in self.rates:
            self.rates[precision] = self.rate_of(precision)
        rate = self.rates[precision]
        work = self.work(kinds)
        if not rate or not self.reference_latency_s or not work:
            return None
        fastest_s = work / (rate * ROOFLINE_HEADROOM)
        speedup = self.reference_latency_s / fastest_s
        what = f"its {', '.join(kinds)} layers' " if kinds else ""
        return speedup, (f"{precision} roofline: {what}{work / 1e9:.1f} GFLOP per call at "
                         f"{ROOFLINE_HEADROOM:g} x the {rate / 1e9:.0f} GFLOP/s of a large "
                         f"{precision} GEMM here takes at least {fastest_s * 1e3:.1f} ms")


class Planner:
    """The search's order and bounds; :meth:`next_variant` is asked after every candidate."""

    def __init__(self, variants: list[Variant], device: DeviceInfo, rows: list[CandidateResult],
                 *, exhaustive: bool = False):
        self.device = device
        self.exhaustive = exhaustive
        self.pending = list(variants)
        self.ids = {v.id for v in variants}
        self.rows = rows  # the search's table, appended to as candidates are tried
        self.ceiling: Ceiling | None = None  # set once the reference has been measured

    def __iter__(self) -> Iterator[Variant]:
        while self.pending:
            variant = self.next_variant()
            self.pending.remove(variant)
            yield variant

    # -- order --------------------------------------------------------------------------------
    def _waits_for(self, variant: Variant) -> set[str]:
        """Ids that must be tried before ``variant``: the variants it is a fallback of, a
        same-graph twin or a rescue of, and the eager module a compile bound reads."""
        needs = variant.related_ids("fallback_of", "same_graph_as", "rescue_of")
        counterpart = eager_counterpart(variant, self.device.kind)
        if counterpart:
            needs.add(counterpart[0])
        faster = slower_runtime(variant, self.device)
        if faster:
            needs.update(faster[0])
        return needs & self.ids

    def expected(self, variant: Variant) -> float:
        """The prior, scaled by how this search's measured candidates of the same backend
        compared with theirs (geometric mean)."""
        logs = [math.log(r.speedup / prior(self._variant_of(r), self.device.kind))
                for r in self.rows if r.backend == variant.backend and r.speedup
                and r.id != REFERENCE_ID]
        scale = math.exp(sum(logs) / len(logs)) if logs else 1.0
        return prior(variant, self.device.kind) * scale

    def _variant_of(self, row: CandidateResult) -> Variant:
        return Variant(row.backend, row.variant, row.precision)

    def next_variant(self) -> Variant:
        reference = next((v for v in self.pending if v.id == REFERENCE_ID), None)
        if reference is not None or self.exhaustive:
            return reference or self.pending[0]
        pending_ids = {v.id for v in self.pending}
        ready = [v for v in self.pending if not (self._waits_for(v) & pending_ids)]
        candidates = ready or self.pending  # a cycle cannot happen, but never stall
        return max(candidates, key=lambda v: self.expected(v))

    # -- bounds -------------------------------------------------------------------------------
    def bound_reason(self, variant: Variant) -> str | None:
        """Why ``variant`` cannot beat the best so far (None: it might, or exhaustive)."""
        if self.exhaustive or variant.id == REFERENCE_ID:
            return None
        best = self.best()
        if best is None:
            return None
        need = best.speedup * (1.0 + SKIP_MARGIN)
        for at_most, why in self._bounds(variant):
            if at_most < need:
                return (f"cannot beat {best.id} ({best.speedup:.2f}x) by {SKIP_MARGIN:.0%}: "
                        f"at most {at_most:.2f}x ({why})")
        return None

    def best(self) -> CandidateResult | None:
        """The fastest passing candidate so far, the original aside."""
        return max((r for r in self.rows if r.status in (STATUS_OK, STATUS_SELECTED)
                    and r.speedup and r.id != REFERENCE_ID), key=lambda r: r.speedup,
                   default=None)

    def _bounds(self, variant: Variant) -> Iterator[tuple[float, str]]:
        twins = [r for r in self.rows
                 if r.speedup and r.id in variant.related_ids("same_graph_as")]
        for twin in twins:
            yield (twin.speedup,
                   f"the same int8 graph as {twin.id}, which measured {twin.speedup:.2f}x here: "
                   "another calibration changes its error, not its speed")
        parents = [r for r in self.rows
                   if r.speedup and r.id in variant.related_ids("fallback_of")]
        if parents:
            slowest = min(parents, key=lambda r: r.speedup)
            yield (slowest.speedup,
                   f"a less aggressive fallback of {slowest.id}, which measured "
                   f"{slowest.speedup:.2f}x here")
        counterpart = eager_counterpart(variant, self.device.kind)
        if counterpart:
            eager_id, gain = counterpart
            probe = next((r for r in self.rows if r.id == eager_id and r.speedup), None)
            if probe is not None:
                yield (probe.speedup * gain,
                       f"{probe.id} measured {probe.speedup:.2f}x here and compiling gains at "
                       f"most {gain:g}x over eager")
        faster = slower_runtime(variant, self.device)
        if faster:
            ids, ratio, why = faster
            measured = [r for r in self.rows if r.speedup and r.id in ids]
            if measured:
                fastest = max(measured, key=lambda r: r.speedup)
                yield (fastest.speedup * ratio,
                       f"{fastest.id} measured {fastest.speedup:.2f}x here and {why}; "
                       f"at most {ratio:g}x of it")
        if self.ceiling is not None and variant.precision != "int8":
            roof = self.ceiling.bound(variant.precision)
            if roof is not None:
                yield roof
        if self.ceiling is not None and variant.id in FLOAT_WORK:
            roof = self.ceiling.bound(*FLOAT_WORK[variant.id])
            if roof is not None:
                yield roof
