"""Latency measurement: warm-up, repeated runs, median and spread, peak memory.

Medians and the inter-quartile range rather than means: a single preempted run on a shared CI
runner must not move the result. CUDA work is synchronised before the clock is read; on CPU the
process's resident memory is sampled by a thread while the candidate runs.

On CUDA torch's allocator sees only torch's tensors: TensorRT's engines and ONNX Runtime's arena
allocate outside it. So the search measures the device memory a candidate adds (NVML, or
cudaMemGetInfo where NVML is missing): the memory in use before the candidate is built (after a
collection and ``empty_cache``, so earlier candidates' freed blocks are not counted) against the
peak in use while it is timed, sampled by a thread like the RSS. Candidates are built and timed
one at a time, so each figure is that candidate's alone; the original UNet's weights were on the
device before the search and are not in its figure.

Every statistic of a sample list (quartiles, IQR, outliers) is pytest-benchmark's ``Stats``:
the search, the results files and their pytest-benchmark export then agree to the last digit
with what ``pytest-benchmark compare`` shows for the same samples.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

# What a peak memory figure counts (Timing.memory_kind, CandidateResult.memory_kind).
MEMORY_KINDS = {
    "rss": "process resident memory (peak, sampled)",
    "cuda_allocated": "torch's CUDA allocator only (peak allocated)",
    "cuda_process": "device memory the candidate adds, this process's (NVML)",
    "cuda_device": "device memory the candidate adds, whole device (NVML or cudaMemGetInfo)",
}
# How tables label a figure that is not the process's RSS (the CPU's tables stay unlabelled).
MEMORY_LABELS = {"cuda_allocated": "torch alloc.", "cuda_process": "GPU, added",
                 "cuda_device": "GPU device, added"}


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
    memory_kind: str = "rss"  # a key of MEMORY_KINDS

    @property
    def median_s(self) -> float:
        return sample_stats(self.samples_s).median

    @property
    def iqr_s(self) -> float:
        return sample_stats(self.samples_s).iqr

    def to_dict(self) -> dict:
        return {**asdict(self), "median_s": self.median_s, "iqr_s": self.iqr_s,
                "n": len(self.samples_s)}


class PeakSampler(threading.Thread):
    """The peak of ``read()`` (bytes) while a call runs, sampled by a thread."""

    def __init__(self, read: Callable[[], int], interval_s: float = 0.005):
        super().__init__(daemon=True)
        self._read = read
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.peak = read()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._read())
            self._stop_event.wait(self._interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._read())


class RssSampler(PeakSampler):
    """The process's peak resident memory while a call runs (sampled by a thread)."""

    def __init__(self, interval_s: float = 0.005):
        import psutil

        proc = psutil.Process()
        super().__init__(lambda: proc.memory_info().rss, interval_s)


class DeviceMemory:
    """The memory in use on one CUDA device now (``read()``, bytes), and which kind it is.

    NVML (``pynvml``, from nvidia-ml-py) when it is installed and answers: this process's own
    memory on the device (``nvmlDeviceGetComputeRunningProcesses``; kind ``cuda_process``) when
    the driver reports it, which other processes on the GPU do not disturb, else the device's
    (``nvmlDeviceGetMemoryInfo(...).used``; ``cuda_device``). Without NVML, or when it fails (a
    container's PID namespace hides the process, no driver library), cudaMemGetInfo's total
    minus free (``torch.cuda.mem_get_info``; ``cuda_device``). Every allocator counts: torch's,
    TensorRT's, ONNX Runtime's."""

    def __init__(self, kind: str, read: Callable[[], int], source: str):
        self.kind, self.read, self.source = kind, read, source

    @classmethod
    def open(cls, index: int | None = None, *, nvml=None) -> "DeviceMemory":
        """For CUDA device ``index`` (torch's numbering; None: the current device). ``nvml``: the
        pynvml module to use (default: imported when installed)."""
        index = torch.cuda.current_device() if index is None else int(index)
        if nvml is None:
            from ..deps import is_available

            if is_available("pynvml"):
                try:
                    import pynvml as nvml
                except Exception:  # noqa: BLE001 - a broken NVML install: cudaMemGetInfo
                    nvml = None
        if nvml is not None:
            try:
                return cls._nvml(nvml, index)
            except Exception:  # noqa: BLE001 - NVMLError, no driver library: cudaMemGetInfo
                pass

        def mem_get_info() -> int:
            free, total = torch.cuda.mem_get_info(index)
            return int(total - free)

        return cls("cuda_device", mem_get_info, "cudaMemGetInfo")

    @classmethod
    def _nvml(cls, nvml, index: int) -> "DeviceMemory":
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))
        pid = os.getpid()

        def own() -> int | None:
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
            return None

        def steady(read: Callable[[], int | None]) -> Callable[[], int]:
            """A failed or missing reading (the process gone from the list for a moment, an
            NVML error) repeats the last one rather than failing the candidate."""
            last = [read() or 0]

            def reader() -> int:
                try:
                    value = read()
                except Exception:  # noqa: BLE001 - NVMLError
                    value = None
                last[0] = last[0] if value is None else value
                return last[0]

            return reader

        if own() is not None:
            return cls("cuda_process", steady(own), "NVML")
        return cls("cuda_device", steady(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used)),
                   "NVML")


def _nvml_index(index: int) -> int:
    """NVML numbers all the machine's GPUs; torch only the visible ones (CUDA_VISIBLE_DEVICES)."""
    mapping = getattr(torch.cuda, "_get_nvml_device_index", None)
    if mapping is not None:
        return int(mapping(index))
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        raise RuntimeError("cannot map torch's device index to NVML's")
    return index


@dataclass
class MemoryBaseline:
    """The device memory in use before a candidate is built (see :func:`memory_baseline`)."""

    device: DeviceMemory
    used: int
    torch_reserved: int


def memory_baseline(device: DeviceMemory) -> MemoryBaseline:
    """What is in use on the device now, without the blocks torch's allocator keeps cached:
    taken before a candidate's build, so that its figure is what it adds."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return MemoryBaseline(device, device.read(), int(torch.cuda.memory_reserved()))


def _sync(device_kind: str) -> None:
    if device_kind == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[int], object], *, device_kind: str = "cpu", warmup: int = 1,
            repeats: int = 5, max_seconds: float | None = None, min_repeats: int = 3,
            memory: MemoryBaseline | None = None) -> Timing:
    """Time ``fn(i)`` for i = 0, 1, ...: ``warmup`` untimed calls, then up to ``repeats`` timed
    ones, stopping early (but not before ``min_repeats``) once ``max_seconds`` have been spent.

    On CUDA with ``memory`` (taken before the candidate was built) the peak is the device memory
    the candidate adds (every allocator); without it, torch's allocator's peak."""
    with torch.inference_mode():
        for i in range(warmup):
            fn(i)
        _sync(device_kind)
        sampler = None
        if device_kind == "cuda":
            torch.cuda.reset_peak_memory_stats()
            if memory is not None:
                sampler = PeakSampler(memory.device.read)
                sampler.start()
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
    if device_kind == "cuda" and memory is not None:
        # The sampler can miss a short peak of torch's allocator; its own peak cannot be missed.
        # Both are lower bounds of what the candidate adds, so the larger one is reported.
        added = max(peak - memory.used,
                    int(torch.cuda.max_memory_reserved()) - memory.torch_reserved, 0)
        return Timing(samples, added, memory.device.kind)
    if device_kind == "cuda":
        return Timing(samples, torch.cuda.max_memory_allocated(), "cuda_allocated")
    return Timing(samples, peak, "rss")
