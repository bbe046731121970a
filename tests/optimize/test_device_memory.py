"""The device memory a candidate adds on CUDA (issue #16, item 5a): torch's allocator does not see
TensorRT's engines nor ONNX Runtime's arena, so the search reads NVML (or cudaMemGetInfo) before
each candidate's build and while it is timed. Checked here with fakes of NVML and of torch.cuda
that follow the real APIs (tests/optimize/fake_cuda.py); tests/test_cuda.py runs it on a GPU."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from sdopt import deps
from sdopt.optimize import timing
from sdopt.optimize.summary import candidates_table
from sdopt.optimize.table import CandidateResult, OptimizationResult
from sdopt.optimize.timing import DeviceMemory, MemoryBaseline, measure, memory_baseline
from tests.optimize.fake_cuda import NVML_API, FakeNvml

ROOT = Path(__file__).resolve().parents[2]


def test_sdopt_calls_only_nvml_functions_that_exist():
    used = set(re.findall(r"\bnvml\.(\w+)", (ROOT / "sdopt/optimize/timing.py").read_text()))
    assert used and used <= set(NVML_API), used - set(NVML_API)
    assert all(hasattr(FakeNvml, name) for name in NVML_API)
    if deps.is_available("pynvml"):  # the GPU image (nvidia-ml-py from the gpu extra)
        import pynvml

        missing = [name for name in NVML_API if not hasattr(pynvml, name)]
        assert not missing, f"pynvml {deps.version('pynvml')} lacks {missing}"


def test_nvml_is_probed_where_optional_dependencies_are():
    assert deps.PACKAGES["pynvml"] == (("nvidia-ml-py", "pynvml"), "gpu")
    assert "pip install 'sdopt[gpu]'" in deps.install_hint("pynvml")


@pytest.fixture
def nvml_index(monkeypatch):
    """torch's mapping from its device numbers to NVML's (CUDA_VISIBLE_DEVICES): device 0 is
    the machine's GPU 3 here."""
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda index: index + 3,
                        raising=False)


def test_nvml_reads_this_processs_own_memory(nvml_index):
    nvml = FakeNvml(used=9 * 2**30, processes={os.getpid(): 2 * 2**30, 1: 7 * 2**30})
    memory = DeviceMemory.open(0, nvml=nvml)
    assert (memory.kind, memory.source) == ("cuda_process", "NVML")
    assert nvml.handles == [3]                       # NVML's numbering, not torch's
    assert memory.read() == 2 * 2**30                # another process's 7 GiB not counted
    nvml.processes[os.getpid()] = 3 * 2**30          # e.g. a TensorRT engine deserialised
    assert memory.read() == 3 * 2**30


def test_nvml_reads_the_devices_memory_when_the_process_is_hidden(nvml_index):
    # In a container NVML may list the host's PIDs, or report no per-process figure (None).
    for processes in ({12345: 2**30}, {os.getpid(): None}):
        nvml = FakeNvml(used=5 * 2**30, processes=processes)
        memory = DeviceMemory.open(0, nvml=nvml)
        assert (memory.kind, memory.source) == ("cuda_device", "NVML")
        assert memory.read() == 5 * 2**30


def test_without_nvml_cudaMemGetInfo(monkeypatch, nvml_index):
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return 30 * 2**30, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    memory = DeviceMemory.open(1, nvml=FakeNvml(fail_init=True))
    assert (memory.kind, memory.source) == ("cuda_device", "cudaMemGetInfo")
    assert memory.read() == 50 * 2**30 and asked == [1]
    monkeypatch.setattr(timing, "_nvml_index", lambda index: 1 / 0)  # no mapping: no NVML
    assert DeviceMemory.open(1, nvml=FakeNvml()).source == "cudaMemGetInfo"


@pytest.fixture
def fake_torch_cuda(monkeypatch):
    """torch.cuda's allocator statistics as measure() and memory_baseline() read them."""
    state = {"reserved": 0, "max_reserved": 0, "allocated": 0, "empty_cache": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache",
                        lambda: state.__setitem__("empty_cache", state["empty_cache"] + 1))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved",
                        lambda device=None: state["max_reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: state.__setitem__("max_reserved", state["reserved"]))
    return state


def test_measure_reports_what_the_candidate_adds_outside_torch(fake_torch_cuda, nvml_index):
    """A TensorRT-like candidate: 1 GiB allocated outside torch's allocator when it was built,
    256 MiB more of activations while it runs; torch's allocator sees none of it."""
    pid = os.getpid()
    nvml = FakeNvml(processes={pid: 3 * 2**30})      # the original UNet and the CUDA context
    memory = DeviceMemory.open(0, nvml=nvml)
    baseline = memory_baseline(memory)
    assert baseline.used == 3 * 2**30 and fake_torch_cuda["empty_cache"] == 1
    nvml.processes[pid] += 2**30                     # the build: an engine's weights

    def call(i):
        nvml.processes[pid] += 256 * 2**20          # the execution context's activations
        import time
        time.sleep(0.1)                              # the sampler thread (5 ms) sees it
        nvml.processes[pid] -= 256 * 2**20

    result = measure(call, device_kind="cuda", warmup=1, repeats=3, memory=baseline)
    assert result.memory_kind == "cuda_process"
    assert result.peak_memory_bytes == 2**30 + 256 * 2**20
    # Without a baseline the CUDA path is as before: torch's allocator only.
    plain = measure(call, device_kind="cuda", warmup=0, repeats=3)
    assert (plain.memory_kind, plain.peak_memory_bytes) == ("cuda_allocated", 0)


def test_a_peak_of_torchs_allocator_between_samples_still_counts(fake_torch_cuda):
    memory = DeviceMemory("cuda_device", lambda: 2**30, "cudaMemGetInfo")

    def call(i):  # 512 MiB reserved and released by torch faster than the sampler looks
        fake_torch_cuda["max_reserved"] = 512 * 2**20

    baseline = MemoryBaseline(memory, used=2**30, torch_reserved=0)
    result = measure(call, device_kind="cuda", warmup=0, repeats=3, memory=baseline)
    assert (result.memory_kind, result.peak_memory_bytes) == ("cuda_device", 512 * 2**20)


def _result(kinds: list[str | None]) -> OptimizationResult:
    rows = [CandidateResult(f"b/v{i}", "b", f"v{i}", "fp16", [], "ok", latency_s=0.01,
                            peak_memory_bytes=(i + 1) * 2**20, memory_kind=kind)
            for i, kind in enumerate(kinds)]
    return OptimizationResult(device={}, metric="numeric_precision", metric_drop_ths=0.05,
                              optimization_time="constrained", samples={}, candidates=rows,
                              original=rows[0], selected=rows[0])


def _headers_and_cells(result):
    table = candidates_table(result)
    column = next(c for c in table.columns if str(c.header).startswith("peak mem"))
    return str(column.header), [str(cell) for cell in column._cells]


def test_the_search_table_says_which_memory_it_shows():
    header, cells = _headers_and_cells(_result(["cuda_process", "cuda_process"]))
    assert header == "peak mem (GPU, added)" and cells == ["1.0 MB", "2.0 MB"]
    header, cells = _headers_and_cells(_result(["cuda_device", "cuda_process"]))
    assert header == "peak mem" and cells == ["1.0 MB (GPU device, added)", "2.0 MB (GPU, added)"]
    # On CPU (and in results saved before the kind was recorded) the table is as it was.
    for kinds in (["rss", "rss"], [None, None]):
        assert _headers_and_cells(_result(kinds)) == ("peak mem", ["1.0 MB", "2.0 MB"])
    assert CandidateResult.from_dict(_result(["cuda_device"]).candidates[0].to_dict()
                                     ).memory_kind == "cuda_device"
    assert set(timing.MEMORY_KINDS) >= {"rss", "cuda_allocated", "cuda_process", "cuda_device"}


def test_the_report_says_which_memory_it_shows():
    from sdopt.report.context import candidate_rows

    rows = candidate_rows({"optimization": {"candidates": [
        {"id": "tensorrt/fp16", "peak_memory_bytes": 2**30, "memory_kind": "cuda_process"},
        {"id": "openvino/int8", "peak_memory_bytes": 2**30, "memory_kind": "rss"},
        {"id": "old/result", "peak_memory_bytes": 2**30}]}})
    memory = [r["memory"] for r in rows]
    assert memory[0].endswith("(GPU, added)") and memory[1] == memory[2] == memory[0].split(" (")[0]


def test_a_failed_nvml_reading_repeats_the_last_one(nvml_index):
    nvml = FakeNvml(processes={os.getpid(): 2**30})
    memory = DeviceMemory.open(0, nvml=nvml)

    def broken(handle):
        raise FakeNvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetComputeRunningProcesses = broken
    assert memory.read() == 2**30
