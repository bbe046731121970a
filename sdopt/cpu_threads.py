"""How many threads sdopt's CPU runtimes use: no more than the container's CPU quota.

torch, OpenVINO and ONNX Runtime size their thread pools from the CPUs the process may run on
(its affinity), which a CFS quota (``docker run --cpus``, a Kubernetes CPU limit: the runner pods
of actions-runner-controller) does not narrow. With more threads than the quota, all of them run
until the quota is spent and then all wait for the next period, while the ones that finished early
spin at the OpenMP barrier: measured with an sd15 UNet call at 256 px on 2 cores under a 1-CPU
quota, torch's default 2 threads took 1.23x as long as 1 thread (benchmarks/cpu_quota_threads.py).
On a 64-core node with a 4-CPU limit the pools would hold 16x the threads the quota runs. So the
pools are capped at the quota, rounded down (a quota of 1.5 CPUs runs 1 thread without being
throttled, 2 would be) and at least 1; nothing changes where there is no quota, or where the user
already asked for fewer threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``, the gate's
``threads``).
"""

from __future__ import annotations

import logging
import math
import os

from .cgroups import cpu_quota

log = logging.getLogger(__name__)


def affinity_cpus() -> int:
    """The CPUs this process may run on (what the runtimes size their pools from)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def quota_threads() -> int | None:
    """Threads the CPU quota can run without being throttled, where it is below the affinity
    (None: no quota, or one at least as large as the CPUs the process may run on)."""
    quota = cpu_quota()
    if quota is None:
        return None
    threads = max(1, math.floor(quota))
    return threads if threads < affinity_cpus() else None


def usable_cpus() -> int:
    """The CPUs this process can keep busy: its affinity, or its quota where smaller."""
    return quota_threads() or affinity_cpus()


def fit_torch_threads() -> int | None:
    """Cap torch's intra-op threads at the CPU quota (None: nothing to cap). Called where sdopt's
    work starts (optimize, load, apply, the gate's benchmark); it never raises a lower count."""
    threads = quota_threads()
    if threads is None:
        return None
    import torch

    if torch.get_num_threads() > threads:
        log.info("CPU quota (cgroup): torch runs %d threads instead of %d", threads,
                 torch.get_num_threads())
        torch.set_num_threads(threads)
    return threads


def openvino_thread_config() -> dict:
    """OpenVINO CPU properties that keep its stream threads within the quota (empty: none)."""
    threads = quota_threads()
    return {"INFERENCE_NUM_THREADS": threads} if threads else {}


def set_onnxruntime_threads(options) -> None:
    """Cap an ``onnxruntime.SessionOptions``' intra-op pool at the quota (0, its default, means
    one thread per physical core of the affinity)."""
    threads = quota_threads()
    if threads:
        options.intra_op_num_threads = threads
