"""How much memory this process may use: the machine's RAM, or its container's limit when that
is smaller.

``psutil`` (``/proc/meminfo``) describes the machine, not the container. A runner in Kubernetes
(actions-runner-controller, the usual way to host GPU runners), ``docker run --memory`` or a
systemd slice caps the process with a cgroup; past that cap the kernel kills it, while
``MemAvailable`` still shows the host's free memory. The search asks before builds that hold extra
weight copies (a full SDXL UNet is 10 GB in fp32), so it must ask the cgroup: a candidate that does
not fit is then skipped with its reason instead of the whole search being OOM-killed, with no
table and no report.

What a cgroup can still give is its limit less its working set: usage less the inactive file
cache, which the kernel reclaims before it kills (the figure ``docker stats`` and the kubelet use;
:func:`sdopt.cgroups.cgroup_memory`).
"""

from __future__ import annotations

from .cgroups import cgroup_memory


def _psutil_memory() -> tuple[int, int] | None:
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except Exception:  # noqa: BLE001 - unknown memory: the callers assume enough
        return None


def memory_limit() -> tuple[int, str] | None:
    """The most memory this process may use, and what sets it: ``"RAM"``, or ``"container
    limit"`` where its cgroup's is smaller (None: unknown)."""
    machine, cgroup = _psutil_memory(), cgroup_memory()
    if cgroup is not None and (machine is None or cgroup.limit_bytes < machine[0]):
        return cgroup.limit_bytes, "container limit"
    return (machine[0], "RAM") if machine else None


def memory_limit_bytes() -> int | None:
    limit = memory_limit()
    return limit[0] if limit else None


def available_memory_bytes() -> int | None:
    """Memory the process can allocate now without swapping or being killed: the machine's
    MemAvailable (free plus reclaimable page cache), or what its cgroup has left where less."""
    machine, cgroup = _psutil_memory(), cgroup_memory()
    figures = [f for f in (machine and machine[1], cgroup and cgroup.available_bytes)
               if f is not None]
    return min(figures) if figures else None
