"""The one rule that picks: the fastest candidate within the threshold.

The backend phase compares UNet calls (a candidate replaces the previous best only when it is
faster), the technique phase compares whole images end to end; whichever phase decides, the
winner is marked in the table here, so that "selected" means one thing everywhere.
"""

from __future__ import annotations

from typing import Any

from .table import STATUS_OK, STATUS_SELECTED, CandidateResult, OptimizationResult


def faster(row: CandidateResult, best: CandidateResult | None) -> bool:
    """Whether a passing row beats the best so far, per UNet call."""
    return best is None or row.latency_s < best.latency_s


def fastest_end_to_end(contenders: list[tuple[CandidateResult, Any]]):
    """The (row, payload) with the lowest time per image, or None."""
    if not contenders:
        return None
    return min(contenders, key=lambda entry: entry[0].e2e_latency_s)


def select(result: OptimizationResult, row: CandidateResult) -> None:
    """Make ``row`` the search's pick (the previous pick stays a passing candidate)."""
    if result.selected is not None and result.selected is not row:
        result.selected.status = STATUS_OK
    row.status = STATUS_SELECTED
    result.selected = row
