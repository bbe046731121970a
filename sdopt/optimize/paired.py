"""Side-by-side re-timing: the figures a user reads and quotes come from here.

The search times candidates one after another while the machine drifts (allocator and cache
state, clocks, the neighbours of a shared host): measured on a quiet machine the sequential
speedup of the pick was 9% high against the same two models timed alternately, and on a loaded
one int8 showed 11x where it was about 5x. So after the search, the pick, the original and a close
runner-up are timed in rounds, every contender once per round, the order rotated from round to
round (a position in the round gets no systematic advantage), and each candidate's speedup is the
median of its per-round ratios to the original: drift that hits one round hits both sides of its
ratio.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class PairedRatio:
    """One candidate's speedup over the reference, from interleaved rounds."""

    speedup: float  # median over rounds of reference time / candidate time
    q1: float  # quartiles of the per-round ratios: the spread a reader should see
    q3: float
    rounds: int
    latency_s: float  # the candidate's median in these rounds
    reference_latency_s: float  # the reference's median in the same rounds

    def to_dict(self) -> dict:
        return {"speedup": self.speedup, "q1": self.q1, "q3": self.q3, "rounds": self.rounds,
                "latency_s": self.latency_s, "reference_latency_s": self.reference_latency_s}


@dataclass
class Rounds:
    """Samples of interleaved rounds: ``samples_s[name][r]`` is ``name``'s time in round r."""

    samples_s: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, name: str, reference: str) -> PairedRatio:
        ref, own = self.samples_s[reference], self.samples_s[name]
        ratios = [r / c for r, c in zip(ref, own)]
        q1, q3 = quartiles(ratios)
        return PairedRatio(statistics.median(ratios), q1, q3, len(ratios),
                           statistics.median(own), statistics.median(ref))

    def difference(self, name: str, reference: str) -> dict[str, float]:
        """What ``name`` saves over ``reference``: the median of the per-round differences,
        with their quartiles, the rounds and both medians."""
        ref, own = self.samples_s[reference], self.samples_s[name]
        saved = [r - c for r, c in zip(ref, own)]
        q1, q3 = quartiles(saved)
        return {"saved_s": statistics.median(saved), "q1": q1, "q3": q3, "rounds": len(saved),
                "latency_s": statistics.median(own), "reference_latency_s": statistics.median(ref)}


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles of per-round figures (the one figure when there is one)."""
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(sorted(values), n=4, method="inclusive")
        return q1, q3
    return values[0], values[0]


def interleave(calls: dict[str, Callable[[int], object]], *, rounds: int, warmup: int = 1,
               min_rounds: int = 3, max_seconds: float | None = None,
               device_kind: str = "cpu", on_round: Callable[[], None] | None = None,
               decided: Callable[["Rounds"], bool] | None = None) -> Rounds:
    """Time every call once per round, the order rotated each round; ``warmup`` untimed rounds
    first. Stops after ``max_seconds`` once ``min_rounds`` are done (a slow pipeline gets fewer
    rounds, never fewer than the minimum), and after two rounds already when ``decided`` says
    the rounds so far settle what they are for (more could not change the decision)."""
    names = list(calls)
    sync = torch.cuda.synchronize if device_kind == "cuda" else (lambda: None)
    out = Rounds({n: [] for n in names})
    with torch.inference_mode():
        for w in range(warmup):
            for name in names:
                calls[name](w)
        sync()
        started = time.perf_counter()
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                calls[name](warmup + r)
                sync()
                out.samples_s[name].append(time.perf_counter() - t0)
            if on_round is not None:
                on_round()
            if max_seconds is not None and r + 1 >= min_rounds \
                    and time.perf_counter() - started > max_seconds:
                break
            if decided is not None and r + 1 >= 2 and decided(out):
                break
    return out


class CallTimes:
    """The seconds of each call of ``module`` (an ``nn.Module``, through its forward hooks), so
    that the rounds timing whole images also give its calls side by side. Its hooks run last
    before the call and first after it: another hook's work (the capture's copies) stays out.
    CPU only: on CUDA a hook would time the launch, not the work."""

    def __init__(self, module: torch.nn.Module):
        self.seconds: list[float] = []
        self._started = 0.0

        def before(*_):
            self._started = time.perf_counter()

        def after(*_):
            self.seconds.append(time.perf_counter() - self._started)

        self._handles = [module.register_forward_pre_hook(before),
                         module.register_forward_hook(after, prepend=True)]

    def take(self) -> list[float]:
        """The calls since the last take."""
        taken, self.seconds = self.seconds, []
        return taken

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
