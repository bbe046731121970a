"""The search table: one row per candidate (its status, reason, build time, latencies, metric
drops, memory, size), and the whole search's result.

It is what users read (the summary table, ``optimized.sdopt_result``), what a saved model and a
cached decision keep (``to_dict``/``from_dict``), and what the report renders from results.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..backends.torch_eager import REFERENCE_ID

# The key of ``CandidateResult.paired`` for a constrained search's component setting timed
# side by side with what it is stacked on ({"saved_s": seconds per image, quartiles, rounds}:
# endtoend.setting_saving), next to "unet" and "e2e" (against the original).
BASE_LEVEL = "base"

__all__ = ["STATUS_SELECTED", "STATUS_OK", "STATUS_REJECTED", "STATUS_FAILED", "STATUS_SKIPPED",
           "REFERENCE_ID", "BASE_LEVEL", "CandidateResult", "OptimizationResult",
           "set_e2e_speedup"]

STATUS_SELECTED, STATUS_OK, STATUS_REJECTED = "selected", "ok", "rejected"
STATUS_FAILED, STATUS_SKIPPED = "failed", "skipped"


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
    memory_kind: str | None = None  # what peak_memory_bytes counts: optimize.timing.MEMORY_KINDS
    # The process's peak resident memory while the candidate was built, verified, timed and
    # scored (sdopt.optimize.memory; None where the peak cannot be reset per candidate).
    peak_rss_bytes: int | None = None
    model_size_bytes: int | None = None
    # The metric's drop: the mean over the held-out calls, and the worst prompt's (the mean of
    # its calls), which the default metric_aggregate="max" judges.
    metric_drop: float | None = None
    metric_drop_max: float | None = None
    speedup: float | None = None
    batch: int = 1
    # End to end (whole pipeline, per image) and image metrics vs the original's images.
    e2e_latency_s: float | None = None
    e2e_latency_samples_s: list[float] = field(default_factory=list)
    e2e_speedup: float | None = None
    image_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    image_metric_drop: float | None = None  # the gate metric's mean over the prompts' images
    image_metric_drop_max: float | None = None  # ... and its worst image
    # Technique specs ({"name": ..., params}) on top of the backend: what save_model records.
    pipeline_techniques: list[dict[str, Any]] = field(default_factory=list)
    # Re-timed side by side with the original after the search (the figures users read):
    # {"unet" | "e2e": PairedRatio.to_dict()}; the fields above are the search's sequential ones.
    # BASE_LEVEL: a component setting's seconds saved per image over its base, side by side.
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def throughput(self) -> float | None:
        """UNet calls' images per second (the batch holds both CFG halves of one image)."""
        return None if not self.latency_s else 1.0 / self.latency_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_per_s": self.throughput}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    image_metric: str | None = None  # the metric techniques (and image-level gates) are judged by
    end_to_end: dict[str, Any] = field(default_factory=dict)  # prompts, steps, size of e2e runs
    selected_by: str = "unet_latency"  # or "e2e_latency" (unconstrained searches)
    notes: list[str] = field(default_factory=list)
    # How per-prompt drops met metric_drop_ths: "max" (every prompt) or "mean" (their average).
    metric_aggregate: str = "max"
    # The process's peak resident memory during the whole search (capture, candidates,
    # techniques, side-by-side rounds): "search" when measured over the search alone, "process"
    # when only the process's peak since it started was available (an upper bound).
    peak_rss_bytes: int | None = None
    peak_rss_scope: str | None = None
    # The start images and masks the search ran on, for pipelines that take images:
    # {"start_image_sha256": [...], "mask_image_sha256": [...]}, one sha256 of the pixels per
    # prompt, None for sdopt's default image (sdopt.optimize.inputs.input_image_hashes; the names
    # and values of results.json's config). Empty for text-to-image pipelines.
    input_images: dict[str, list[str | None]] = field(default_factory=dict)

    @property
    def level(self) -> str:
        """What the pick was compared on: "e2e" (per image) or "unet" (per UNet call)."""
        return "e2e" if self.selected_by == "e2e_latency" else "unet"

    @property
    def speedup(self) -> float | None:
        """The pick's speedup over the original at :attr:`level`: the side-by-side figure when
        the pick was re-timed so (it always is, unless it is the original), else the search's."""
        s = self.selected
        if s is not None and self.level in s.paired:
            return s.paired[self.level]["speedup"]
        return self.search_speedup

    @property
    def speedup_source(self) -> str | None:
        """"paired" (re-timed side by side) or "sequential" (the search's own timings)."""
        if self.speedup is None:
            return None
        s = self.selected
        return "paired" if s is not None and self.level in s.paired else "sequential"

    @property
    def search_speedup(self) -> float | None:
        """The search's sequential figure (candidates timed one after another)."""
        o, s = self.original, self.selected
        if self.level == "e2e":
            if o and s and o.e2e_latency_s and s.e2e_latency_s:
                return o.e2e_latency_s / s.e2e_latency_s
            return None
        if o and s and s.latency_s:
            return o.latency_s / s.latency_s
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "metric": self.metric, "metric_drop_ths": self.metric_drop_ths,
            "optimization_time": self.optimization_time, "samples": self.samples,
            "metric_aggregate": self.metric_aggregate,
            "original": self.original.to_dict() if self.original else None,
            "selected": self.selected.to_dict() if self.selected else None,
            "speedup": self.speedup, "speedup_source": self.speedup_source,
            "search_speedup": self.search_speedup, "wall_s": self.wall_s,
            "image_metric": self.image_metric,
            "end_to_end": self.end_to_end, "selected_by": self.selected_by, "notes": self.notes,
            "peak_rss_bytes": self.peak_rss_bytes, "peak_rss_scope": self.peak_rss_scope,
            "input_images": self.input_images,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OptimizationResult":
        """The inverse of to_dict; original and selected are the same objects as their rows."""
        candidates = [CandidateResult.from_dict(c) for c in data.get("candidates", [])]

        def row(entry):
            if not entry:
                return None
            same = next((c for c in candidates if c.id == entry["id"]), None)
            return same or CandidateResult.from_dict(entry)

        return cls(device=data["device"], metric=data["metric"],
                   metric_drop_ths=data.get("metric_drop_ths"),
                   optimization_time=data["optimization_time"], samples=data.get("samples", {}),
                   candidates=candidates, original=row(data.get("original")),
                   selected=row(data.get("selected")), wall_s=data.get("wall_s", 0.0),
                   image_metric=data.get("image_metric"), end_to_end=data.get("end_to_end", {}),
                   selected_by=data.get("selected_by", "unet_latency"),
                   notes=list(data.get("notes", [])),
                   peak_rss_bytes=data.get("peak_rss_bytes"),
                   peak_rss_scope=data.get("peak_rss_scope"),
                   input_images=dict(data.get("input_images") or {}),
                   # Results written before the aggregate existed were judged by the mean.
                   metric_aggregate=data.get("metric_aggregate", "mean"))




def set_e2e_speedup(row: CandidateResult, original: CandidateResult | None) -> None:
    if original and original.e2e_latency_s and row.e2e_latency_s:
        row.e2e_speedup = original.e2e_latency_s / row.e2e_latency_s
