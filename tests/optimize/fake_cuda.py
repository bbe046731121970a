"""Fakes of the CUDA APIs that sdopt's GPU measurement calls, for machines without a GPU
(issue #16, item 5). Each follows the real API: ``FakeEvent`` torch.cuda.Event's (its
constructor's and methods' parameters are compared with torch's in the tests), ``FakeNvml``
nvidia-ml-py's ``pynvml`` module (function names as in nvidia-ml-py 13.615.71, checked against
the installed module where there is one). tests/test_cuda.py runs the same paths on a real GPU.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

# The pynvml functions sdopt may call, as nvidia-ml-py 13.615.71 defines them (read from its
# wheel: `pip download --no-deps nvidia-ml-py`, pynvml.py): nvmlDeviceGetMemoryInfo returns a
# c_nvmlMemory_t (total, free, used), nvmlDeviceGetComputeRunningProcesses a list of objects
# with pid and usedGpuMemory (None where the driver does not report it).
NVML_API = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetComputeRunningProcesses", "NVMLError")


class FakeGpu:
    """The fake device's timeline (one stream): events complete, in the order recorded, at a
    synchronisation, as on a real GPU that the CPU runs ahead of; ``synchronize`` stands in for
    ``torch.cuda.synchronize``."""

    def __init__(self):
        self.pending: list[FakeEvent] = []
        self.syncs = 0
        self.created = 0

    def synchronize(self, device=None) -> None:
        self.syncs += 1
        for event in self.pending:
            event._done = True
        self.pending.clear()


class FakeEvent:
    """torch.cuda.Event: ``record(stream=None)``, ``elapsed_time(end_event)`` in milliseconds
    (only once both events completed, else RuntimeError as torch raises), ``synchronize()``,
    ``query()``, ``wait(stream=None)``. Its time is the CPU's clock when it was recorded."""

    gpu: FakeGpu = FakeGpu()

    def __init__(self, enable_timing=False, blocking=False, interprocess=False, external=False):
        self.enable_timing = enable_timing
        self._t: float | None = None
        self._done = False
        FakeEvent.gpu.created += 1

    def record(self, stream=None) -> None:
        self._t = time.perf_counter()
        self._done = False
        FakeEvent.gpu.pending.append(self)

    def query(self) -> bool:
        return self._done

    def synchronize(self) -> None:
        # One stream: the work recorded before this event has completed with it.
        pending = FakeEvent.gpu.pending
        if self in pending:
            for event in pending[:pending.index(self) + 1]:
                event._done = True
            del pending[:pending.index(self) + 1]

    def wait(self, stream=None) -> None:
        pass

    def elapsed_time(self, end_event: "FakeEvent") -> float:
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if not (self._done and end_event._done):
            raise RuntimeError("Both events must be completed before calculating elapsed time.")
        return (end_event._t - self._t) * 1000.0


class FakeNvml:
    """pynvml: one device whose used memory and processes the test sets."""

    class NVMLError(Exception):
        pass

    def __init__(self, *, used: int = 0, processes: dict[int, int | None] | None = None,
                 fail_init: bool = False):
        self.used = used
        self.processes = dict(processes or {})
        self.fail_init = fail_init
        self.initialised = False
        self.handles: list[int] = []

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetHandleByIndex(self, index):
        assert self.initialised, "nvmlInit first"
        self.handles.append(index)
        return ("handle", index)

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        assert self.initialised and handle[0] == "handle"
        return SimpleNamespace(total=80 * 2**30, free=80 * 2**30 - self.used, used=self.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        assert self.initialised and handle[0] == "handle"
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem, gpuInstanceId=0xFFFFFFFF,
                                computeInstanceId=0xFFFFFFFF)
                for pid, mem in self.processes.items()]
