"""The pick, re-timed side by side with the original: the figure the summary and the saved
manifest report.

Two levels, each after the phase that decided at that level: per UNet call after the backend
phase (the pick, the original and a runner-up within :data:`RUNNER_UP_WITHIN`), and per
image after the technique (or component precision) phase. When the side-by-side rounds put the
runner-up ahead of the pick, the runner-up becomes the pick: the rounds are the better
measurement, and the search's sequential order was within its noise anyway.
"""

from __future__ import annotations

from typing import Any, Callable

from .paired import interleave
from .selection import select
from .table import REFERENCE_ID, CandidateResult, OptimizationResult

# A runner-up this close to the pick (by the search's sequential figures) is re-timed too: the
# search's ordering of the two is within its noise. Per UNet call the noise is wider and a
# runner-up costs little (its call is faster than the original's, which every round has): on the
# tiny preset OpenVINO's int8 was timed 24% behind its bf16 a few seconds apart, then 1.2x ahead
# of it side by side (benchmarks/results/search_cold_tiny.json, 2026-12-02).
RUNNER_UP_WITHIN = {"unet": 0.30, "e2e": 0.15}
# Rounds of the confirmation and the time they may take (a slow pipeline gets fewer rounds, at
# least MIN_ROUNDS): a search on the sd15 architecture at 256 px spends about 20 s per level.
UNET_ROUNDS, UNET_SECONDS = 10, 20.0
E2E_ROUNDS, E2E_SECONDS = 5, 45.0
MIN_ROUNDS = 3


def close_runner_up(pick: CandidateResult, runner_up: CandidateResult | None, *,
                    level: str) -> bool:
    """Whether ``runner_up`` is within RUNNER_UP_WITHIN[level] of ``pick`` by the search's
    figures."""
    if runner_up is None:
        return False
    key = "e2e_latency_s" if level == "e2e" else "latency_s"
    mine, theirs = getattr(pick, key), getattr(runner_up, key)
    return bool(mine and theirs and theirs <= mine * (1.0 + RUNNER_UP_WITHIN[level]))


def confirm(result: OptimizationResult, reference: Any,
            contenders: list[tuple[CandidateResult, Any]],
            call_of: Callable[[Any], Callable[[int], object]], *, level: str,
            device_kind: str, rounds: int, max_seconds: float, warmup: int = 1,
            on_round: Callable[[], None] | None = None) -> tuple[CandidateResult, Any]:
    """Time the original (``reference``) and ``contenders`` ((row, payload), the pick first) in
    interleaved rounds; store each contender's paired ratio in ``row.paired[level]``; return the
    (row, payload) with the highest paired speedup, selected in ``result`` when it is not the
    pick. ``call_of(payload)`` is the function a round calls (with the round's index);
    ``warmup``: untimed rounds first (none where every call already ran in this process)."""
    # The original as a contender (an unconstrained runner-up) is the reference itself.
    contenders = [entry for entry in contenders if entry[0].id != REFERENCE_ID]
    calls = {REFERENCE_ID: call_of(reference)}
    calls.update((row.id, call_of(payload)) for row, payload in contenders)
    measured = interleave(calls, rounds=rounds, warmup=warmup, min_rounds=MIN_ROUNDS,
                          max_seconds=max_seconds, device_kind=device_kind, on_round=on_round)
    for row, _ in contenders:
        row.paired[level] = measured.ratio(row.id, REFERENCE_ID).to_dict()
    pick = contenders[0][0]
    best = max(contenders, key=lambda entry: entry[0].paired[level]["speedup"])
    if best[0] is not pick:
        result.notes.append(
            f"re-timed side by side ({level}), {best[0].id} "
            f"({best[0].paired[level]['speedup']:.2f}x) beat the search's pick {pick.id} "
            f"({pick.paired[level]['speedup']:.2f}x): it is the pick")
        select(result, best[0])
    return best
