"""Quality metrics, each expressed as a *drop* (0 = identical) so one threshold means one thing.

``numeric_precision`` (the default, as in Speedster) compares UNet noise predictions of a
candidate with those of the original pipeline on held-out inputs sampled over the whole timestep
range. Speedster's own formula (the *maximum* element-wise relative difference, at the first
timestep only) is dominated by near-zero elements and by one step, so that no reduced precision
passes any sensible threshold; ours is the relative L1 error

    drop = mean(|reference - candidate|) / mean(|reference|)

averaged over the held-out inputs (the worst input is reported too). bf16 weights give about
0.01 on SD 1.5; Speedster's Stable Diffusion guide uses ``metric_drop_ths=0.05`` to 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from .errors import SdoptError

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def numeric_precision(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    reference = reference.detach().double()
    candidate = candidate.detach().double()
    if reference.shape != candidate.shape:
        raise ValueError(f"output shape {tuple(candidate.shape)} differs from the reference "
                         f"{tuple(reference.shape)}")
    if not torch.isfinite(candidate).all():
        return float("inf")
    scale = reference.abs().mean().clamp_min(1e-12)
    return float((reference - candidate).abs().mean() / scale)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    doc: str


METRICS: dict[str, Metric] = {
    "numeric_precision": Metric(
        "numeric_precision", numeric_precision,
        "relative L1 error of UNet noise predictions vs the original, over sampled timesteps"),
}

# Below this a candidate counts as numerically identical (float reassociation in compilers).
LOSSLESS_TOLERANCE = 1e-3


def resolve_metric(metric: Union[str, MetricFn, None]) -> Metric:
    """A metric name, a user callable ``(reference, candidate) -> drop``, or None (default)."""
    if metric is None:
        return METRICS["numeric_precision"]
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        return Metric(name, metric, "user-supplied metric")
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise SdoptError(f"unknown metric '{metric}': expected one of {', '.join(METRICS)} or a "
                     "callable (reference, candidate) -> drop")


def validate_threshold(value) -> float | None:
    """metric_drop_ths: None (only lossless candidates) or a number in [0, 1]."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SdoptError(f"metric_drop_ths '{value}' is not a number: expected a value between 0 "
                         "and 1 (for example 0.05), or None for lossless only") from None
    if not 0.0 <= number <= 1.0 or number != number:
        raise SdoptError(f"metric_drop_ths {value} is out of range: expected a value between 0 "
                         "and 1 (for example 0.05), or None for lossless only")
    return number
