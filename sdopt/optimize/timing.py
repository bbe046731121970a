"""Latency measurement: warm-up, repeated runs, median and spread, peak memory.

Medians and the inter-quartile range rather than means: a single preempted run on a shared CI
runner must not move the result. CUDA work is synchronised before the clock is read; on CPU the
process's resident memory is sampled by a thread while the candidate runs.

Every statistic of a sample list (quartiles, IQR, outliers) is pytest-benchmark's ``Stats``:
the search, the results files and their pytest-benchmark export then agree to the last digit
with what ``pytest-benchmark compare`` shows for the same samples.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


def sample_stats(samples: list[float]):
    """pytest-benchmark's statistics of ``samples`` (a ``pytest_benchmark.stats.Stats``)."""
    from pytest_benchmark.stats import Stats

    if not samples:
        raise ValueError("no samples")
    stats = Stats()
    for value in samples:
        stats.update(float(value))
    return stats


@dataclass
class Timing:
    samples_s: list[float]
    peak_memory_bytes: int | None = None
    memory_kind: str = "rss"  # "rss" (process resident set) | "cuda_allocated"

    @property
    def median_s(self) -> float:
        return sample_stats(self.samples_s).median

    @property
    def iqr_s(self) -> float:
        return sample_stats(self.samples_s).iqr

    def to_dict(self) -> dict:
        return {**asdict(self), "median_s": self.median_s, "iqr_s": self.iqr_s,
                "n": len(self.samples_s)}


class RssSampler(threading.Thread):
    """The process's peak resident memory while a call runs (sampled by a thread)."""

    def __init__(self, interval_s: float = 0.005):
        super().__init__(daemon=True)
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.peak = self._proc.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop_event.wait(self._interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._proc.memory_info().rss)


def _sync(device_kind: str) -> None:
    if device_kind == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[int], object], *, device_kind: str = "cpu", warmup: int = 1,
            repeats: int = 5, max_seconds: float | None = None, min_repeats: int = 3) -> Timing:
    """Time ``fn(i)`` for i = 0, 1, ...: ``warmup`` untimed calls, then up to ``repeats`` timed
    ones, stopping early (but not before ``min_repeats``) once ``max_seconds`` have been spent."""
    with torch.inference_mode():
        for i in range(warmup):
            fn(i)
        _sync(device_kind)
        sampler = None
        if device_kind == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            sampler = RssSampler()
            sampler.start()
        samples: list[float] = []
        started = time.perf_counter()
        try:
            for i in range(repeats):
                t0 = time.perf_counter()
                fn(warmup + i)
                _sync(device_kind)
                samples.append(time.perf_counter() - t0)
                spent = time.perf_counter() - started
                if max_seconds is not None and spent > max_seconds and len(samples) >= min_repeats:
                    break
        finally:
            peak = sampler.stop() if sampler else None
    if device_kind == "cuda":
        return Timing(samples, torch.cuda.max_memory_allocated(), "cuda_allocated")
    return Timing(samples, peak, "rss")
