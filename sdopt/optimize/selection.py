"""The one rule that judges and the one that picks: within the threshold, then the fastest.

A candidate passes when its drop is within ``metric_drop_ths`` on the worst prompt
(``metric_aggregate="max"``, the default) or on the mean over prompts (``"mean"``), for the UNet
metric and for image metrics alike (:func:`judge`). The backend phase compares UNet calls (a
candidate replaces the previous best only when it is faster), the technique phase compares whole
images end to end; whichever phase decides, the winner is marked in the table here, so that
"selected" means one thing everywhere.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .table import (REFERENCE_ID, STATUS_OK, STATUS_REJECTED, STATUS_SELECTED, CandidateResult,
                    OptimizationResult)


def judged_drops(row: CandidateResult, images: bool) -> tuple[float | None, float | None]:
    """(mean, worst prompt) of the drop a row is judged by: its images' or its UNet outputs'."""
    if images:
        return row.image_metric_drop, row.image_metric_drop_max
    return row.metric_drop, row.metric_drop_max


def judge(row: CandidateResult, metric_name: str, ths: float, aggregate: str, *,
          images: bool, suffix: str = "") -> None:
    """Mark ``row`` ok or rejected by ``aggregate`` ("max": its worst prompt; "mean"); the
    reason quotes both figures. The original is the reference and always passes."""
    mean, worst = judged_drops(row, images)
    drop = worst if aggregate == "max" and worst is not None else mean
    if drop is None or not math.isfinite(drop):
        raise FloatingPointError(f"non-finite {'image ' if images else ''}metric "
                                 "(NaN or inf outputs)")
    if drop > ths and row.id != REFERENCE_ID:
        row.status = STATUS_REJECTED
        if aggregate == "max":
            row.reason = (f"{metric_name} drop {drop:.4g} on the worst prompt > threshold "
                          f"{ths:.4g} (mean {mean:.4g}){suffix}")
        else:
            row.reason = f"{metric_name} mean drop {drop:.4g} > threshold {ths:.4g}{suffix}"
    else:
        row.status = STATUS_OK


def fastest_two(leaders: list[tuple[CandidateResult, Any]], entry: tuple[CandidateResult, Any]):
    """The two fastest passing (row, payload) per UNet call among ``leaders`` and ``entry``,
    fastest first: the pick and the runner-up the side-by-side re-timing may prefer."""
    return sorted(leaders + [entry], key=lambda e: e[0].latency_s)[:2]


def ranked_end_to_end(contenders: list[tuple[CandidateResult, Any]],
                      key: Callable[[CandidateResult], float] | None = None):
    """The (row, payload) pairs by time per image (``key``; default: the row's median), fastest
    first."""
    key = key or (lambda row: row.e2e_latency_s)
    return sorted(contenders, key=lambda entry: key(entry[0]))


def select(result: OptimizationResult, row: CandidateResult) -> None:
    """Make ``row`` the search's pick (the previous pick stays a passing candidate)."""
    if result.selected is not None and result.selected is not row:
        result.selected.status = STATUS_OK
    row.status = STATUS_SELECTED
    result.selected = row
