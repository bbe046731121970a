"""Is the gated pipeline slower than the baseline's, beyond what run-to-run drift explains?

Measured here (DESIGN.md section 5, benchmarks/results/gate_noise.md): the samples of one run
share that run's state (clock, caches, memory layout, neighbours), so whole runs shift by 10-60%
while the spread inside a run is a few percent. A test that treats samples of two runs as
exchangeable (Mann-Whitney on baseline vs current samples) therefore calls most reruns of
identical code significant: 7 false alarms in 9 runs. So each comparison here removes the run's
shift before judging, and the verdict names which one decided:

- ``same-job``: base and head measured interleaved in one job. Both sides share every bit of the
  run's state, so the samples are exchangeable and the sample test is valid: it catches any
  change between base and head, shared slowdowns included (the default for pull requests).
- ``in-run-ratio``: the gated variant's latency over the original pipeline's, pair by pair as
  they were interleaved in the same run, against the same ratio in the baseline. A machine that
  is slower today slows both and cancels; a slowdown of the optimized pipeline alone does not.
  Different backends react a little differently to the same machine state, so the ratio still
  drifts between runs: that drift is learnt from the baseline's history of runs, or allowed for
  with ``gate.drift_allowance`` until the history is long enough.
- ``absolute``: the gated variant's median against the baseline's, with runs (not samples) as
  the unit: the new run's median is judged against the prediction interval of the baseline's
  history of run medians. It catches what slows original and optimized alike (a dependency bump)
  once the history holds ``gate.min_history_runs`` runs; with less, the drift of a whole run is
  unknown and only a gross slowdown (``gate.absolute_drift_allowance``) counts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

SAME_JOB, IN_RUN_RATIO, ABSOLUTE = "same-job", "in-run-ratio", "absolute"
CHECKS = (SAME_JOB, IN_RUN_RATIO, ABSOLUTE)
# The statistical test behind each check's p-value (the verdict's latency.test).
MANN_WHITNEY, RUN_HISTORY, RATIO_ONLY = "mann-whitney-u", "run-history-t", "ratio-only"
REFERENCE_VARIANT = "original"

CATCHES = {
    SAME_JOB: "any change between base and head (both measured interleaved in this job), shared "
              "slowdowns included",
    IN_RUN_RATIO: "a slowdown of the gated pipeline alone (the original pipeline, measured "
                  "interleaved in the same run, is the yardstick; machine drift cancels)",
    ABSOLUTE: "a slowdown of original and optimized alike, e.g. a dependency bump (judged "
              "against the run-to-run spread of the baseline's history)",
}


@dataclass(frozen=True)
class Check:
    """One latency comparison as the verdict records it. ``change`` > 1 means slower now."""

    name: str
    catches: str
    baseline: float | None  # seconds per image (same-job, absolute) or a latency ratio
    current: float | None
    unit: str  # "s/image" or "ratio"
    change: float | None
    allowed: float  # the largest change that passes
    p_value: float | None
    test: str
    based_on: str  # what the statistics treat as independent: "samples" or "N runs"
    regressed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("baseline", "current", "change", "allowed", "p_value"):
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = None
        return out


@dataclass(frozen=True)
class Settings:
    """The gate's latency knobs (GateConfig fields of the same names)."""

    tolerance: float
    alpha: float
    min_samples: int
    drift_allowance: float
    min_history_runs: int
    absolute_drift_allowance: float

    @classmethod
    def of(cls, gate, **changes) -> "Settings":
        """The settings of a GateConfig, with ``changes`` (e.g. the rule before drift allowances:
        ``drift_allowance=0, absolute_drift_allowance=0``)."""
        values = {name: getattr(gate, "latency_tolerance" if name == "tolerance" else name)
                  for name in cls.__dataclass_fields__}
        return cls(**{**values, **changes})


def _mann_whitney_greater(current: Sequence[float], baseline: Sequence[float]) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(current, baseline, alternative="greater").pvalue)


def paired_log_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """log(a_i / b_i) of samples taken pairwise (A B A B): each pair shares its moment's state."""
    if len(numerator) != len(denominator):
        return []
    return [math.log(a / b) for a, b in zip(numerator, denominator) if a > 0 and b > 0]


def in_run_ratio(results: dict, variant: str) -> float | None:
    """exp(median of paired log-ratios) of ``variant`` over the original pipeline in one run:
    how many times the original's latency the variant takes (1/speedup)."""
    variants = results.get("variants") or {}
    if variant == REFERENCE_VARIANT or variant not in variants or REFERENCE_VARIANT not in variants:
        return None
    logs = paired_log_ratios(variants[variant]["latency_s"]["samples"],
                             variants[REFERENCE_VARIANT]["latency_s"]["samples"])
    return math.exp(statistics.median(logs)) if logs else None


def _sample_test(baseline: Sequence[float], current: Sequence[float], change: float,
                 allowed: float, s: Settings) -> tuple[float | None, str, bool]:
    """(p, test, regressed) for samples of one run each: the factor AND, with enough samples,
    a one-sided Mann-Whitney test."""
    if min(len(baseline), len(current)) >= s.min_samples:
        p = _mann_whitney_greater(current, baseline)
        return p, MANN_WHITNEY, change > allowed and p < s.alpha
    return None, RATIO_ONLY, change > allowed


def same_job(base: Sequence[float], head: Sequence[float], s: Settings) -> Check:
    base_med, head_med = statistics.median(base), statistics.median(head)
    change = head_med / base_med if base_med > 0 else math.inf
    allowed = 1.0 + s.tolerance
    p, test, regressed = _sample_test(base, head, change, allowed, s)
    return Check(SAME_JOB, CATCHES[SAME_JOB], base_med, head_med, "s/image", change, allowed, p,
                 test, "samples (one run)", regressed,
                 "base and head interleaved in one job: run-to-run drift cancels")


def _history_bound(values: Sequence[float], s: Settings) -> tuple[float, float, float]:
    """(centre, sd, largest passing ratio to the centre) of log ``values``, runs as the unit:
    the upper (1 - alpha) prediction bound for one new run."""
    from scipy.stats import t as student_t

    logs = [math.log(v) for v in values]
    k = len(logs)
    centre, sd = statistics.fmean(logs), statistics.stdev(logs)
    quantile = float(student_t.ppf(1.0 - s.alpha, k - 1))
    return centre, sd, math.exp(quantile * sd * math.sqrt(1.0 + 1.0 / k))


def _history_test(history: Sequence[float], current: float, s: Settings) -> tuple[
        float, float, float]:
    """(change against the history's centre, allowed change, one-sided p) for one new run."""
    from scipy.stats import t as student_t

    centre, sd, bound = _history_bound(history, s)
    k = len(history)
    change = math.exp(math.log(current) - centre)
    if sd > 0:
        stat = (math.log(current) - centre) / (sd * math.sqrt(1.0 + 1.0 / k))
        p = float(student_t.sf(stat, k - 1))
    else:
        p = 0.0 if change > 1.0 else 1.0
    return change, max(1.0 + s.tolerance, bound), p


def _reference(history: Sequence[float], baseline: float) -> tuple[float, str]:
    """The baseline's value for a short history: the median of its runs (a single run may have
    landed high or low: identical runs here fall in two modes about 15% apart), else the
    baseline run's own."""
    if history:
        return statistics.median(history), f"the median of {len(history)} baseline run(s)"
    return baseline, "the baseline run"


def ratio_check(baseline: dict, current: dict, variant: str, history_ratios: Sequence[float],
                s: Settings) -> Check | None:
    """The in-run ratio check, or None when either side lacks the original pipeline."""
    base_ratio, cur_ratio = in_run_ratio(baseline, variant), in_run_ratio(current, variant)
    if base_ratio is None or cur_ratio is None:
        return None
    if len(history_ratios) >= s.min_history_runs:
        change, allowed, p = _history_test(history_ratios, cur_ratio, s)
        regressed = change > allowed and p < s.alpha
        centre = cur_ratio / change
        return Check(IN_RUN_RATIO, CATCHES[IN_RUN_RATIO], centre, cur_ratio, "ratio", change,
                     allowed, p, RUN_HISTORY, f"{len(history_ratios)} baseline runs", regressed,
                     "allowed drift learnt from the baseline's runs")
    reference, what = _reference(history_ratios, base_ratio)
    change = cur_ratio / reference
    allowed = 1.0 + max(s.tolerance, s.drift_allowance)
    bv, cv = baseline["variants"], current["variants"]
    shift = math.log(reference / base_ratio)  # the baseline run's spread, around the reference
    p, test, regressed = _sample_test(
        [d + shift for d in paired_log_ratios(bv[variant]["latency_s"]["samples"],
                                              bv[REFERENCE_VARIANT]["latency_s"]["samples"])],
        paired_log_ratios(cv[variant]["latency_s"]["samples"],
                          cv[REFERENCE_VARIANT]["latency_s"]["samples"]),
        change, allowed, s)
    return Check(IN_RUN_RATIO, CATCHES[IN_RUN_RATIO], reference, cur_ratio, "ratio", change,
                 allowed, p, test, "samples (one run each)", regressed,
                 f"against {what}; run-to-run drift of the ratio allowed up to "
                 f"+{s.drift_allowance:.0%} (gate.drift_allowance) until the baseline holds "
                 f"{s.min_history_runs} runs (it holds {max(len(history_ratios), 1)})")


def absolute_check(baseline: Sequence[float], current: Sequence[float],
                   history_medians: Sequence[float], s: Settings, *, only_check: bool) -> Check:
    """The gated variant's median against the baseline's. Without enough history the machine's
    drift is unknown: only a slowdown beyond ``absolute_drift_allowance`` counts (a gross
    regression still fails the gate), and the note says what catches smaller ones."""
    base_med, cur_med = statistics.median(baseline), statistics.median(current)
    if len(history_medians) >= s.min_history_runs:
        change, allowed, p = _history_test(history_medians, cur_med, s)
        return Check(ABSOLUTE, CATCHES[ABSOLUTE], cur_med / change, cur_med, "s/image", change,
                     allowed, p, RUN_HISTORY, f"{len(history_medians)} baseline runs",
                     change > allowed and p < s.alpha,
                     "allowed drift learnt from the baseline's runs")
    reference, what = _reference(history_medians, base_med)
    change = cur_med / reference if reference > 0 else math.inf
    allowed = 1.0 + max(s.tolerance, s.absolute_drift_allowance)
    scale = reference / base_med if base_med > 0 else 1.0
    p, test, regressed = _sample_test([v * scale for v in baseline], current, change, allowed, s)
    note = (f"against {what}; the baseline holds {max(len(history_medians), 1)} run(s): until "
            f"it holds {s.min_history_runs} (sdopt baseline save --update-baseline adds one) the "
            f"machine's run-to-run drift is unknown, so only a slowdown beyond "
            f"+{s.absolute_drift_allowance:.0%} counts (gate.absolute_drift_allowance); same-job "
            "mode catches smaller shared slowdowns")
    if only_check:
        note += ("; the original pipeline is not in both results, so nothing else judges "
                 "latency: bench it too (bench.variants) for the in-run ratio")
    return Check(ABSOLUTE, CATCHES[ABSOLUTE], reference, cur_med, "s/image", change, allowed, p,
                 test, "samples (one run each)", regressed, note)


def judge(baseline: dict, current: dict, variant: str, *, history: Sequence[dict],
          s: Settings) -> list[Check]:
    """Every latency check that applies (each decides: a regression of any fails the gate)."""
    bv, cv = baseline["variants"][variant], current["variants"][variant]
    base_samples, cur_samples = bv["latency_s"]["samples"], cv["latency_s"]["samples"]
    if is_same_job_pair(baseline, current):
        return [same_job(base_samples, cur_samples, s)]
    ratio = ratio_check(baseline, current, variant,
                        [r["ratios"][variant] for r in history if variant in r.get("ratios", {})],
                        s)
    medians = [r["medians_s"][variant] for r in history if variant in r.get("medians_s", {})]
    absolute = absolute_check(base_samples, cur_samples, medians, s, only_check=ratio is None)
    return [c for c in (ratio, absolute) if c is not None]


def is_same_job_pair(baseline: dict, current: dict) -> bool:
    """Both sides written by one same-job bench (``sdopt bench --same-job-base``)."""
    a = (baseline.get("config") or {}).get("same_job")
    b = (current.get("config") or {}).get("same_job")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return (a.get("side"), b.get("side")) == ("base", "head") and \
        a.get("job") is not None and a.get("job") == b.get("job")


def describe(check: Check) -> str:
    """One line for the reasons list and the terminal."""
    if check.unit == "ratio":
        values = f"{check.current:.3f} of the original's latency vs {check.baseline:.3f}"
    else:
        values = f"median {check.current * 1e3:.1f} ms per image vs {check.baseline * 1e3:.1f} ms"
    change = "n/a" if check.change is None or not math.isfinite(check.change) \
        else f"x{check.change:.3f}"
    p = f", p = {check.p_value:.3g}" if check.p_value is not None else ""
    return (f"{check.name}: {values} ({change}, allowed x{check.allowed:.3f}, {check.test} on "
            f"{check.based_on}{p})")
