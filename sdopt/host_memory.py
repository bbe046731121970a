"""How much memory this process may use: the machine's RAM, or its container's limit when that
is smaller.

``psutil`` (``/proc/meminfo``) describes the machine, not the container. A runner in Kubernetes
(actions-runner-controller, the usual way to host GPU runners), ``docker run --memory`` or a
systemd slice caps the process with a cgroup; past that cap the kernel kills it, while
``MemAvailable`` still shows the host's free memory. The search asks before builds that hold extra
weight copies (a full SDXL UNet is 10 GB in fp32), so it must ask the cgroup: a candidate that does
not fit is then skipped with its reason instead of the whole search being OOM-killed, with no
table and no report.

Both cgroup versions are read, at every level from the process's own cgroup up to the mount's
root (a limit set on a parent slice applies too). What a cgroup can still give is its limit less
its working set: usage less the inactive file cache, which the kernel reclaims before it kills
(the figure ``docker stats`` and the kubelet use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value; v2 as "max".
_UNLIMITED = 2**60


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limit over a cgroup and its ancestors, and what is left under it."""

    limit_bytes: int
    available_bytes: int
    where: str  # the cgroup directory that sets it


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value < _UNLIMITED else None


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    values = dict(line.split(" ", 1) for line in lines if " " in line)
    for key in keys:
        if key in values and values[key].strip().isdigit():
            return int(values[key])
    return 0


# (limit file, usage file, memory.stat keys of the reclaimable file cache, hierarchical first)
_V2 = ("memory.max", "memory.current", ("inactive_file",))
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "inactive_file"))


def _mounts(root: Path) -> dict[str, tuple[Path, str]]:
    """{"v2" | "v1": (mount point, root of the mount inside the hierarchy)} from mountinfo."""
    found: dict[str, tuple[Path, str]] = {}
    try:
        lines = (root / "proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2].split(",")
        point = root / fields[4].lstrip("/")
        if fstype == "cgroup2":
            found.setdefault("v2", (point, fields[3]))
        elif fstype == "cgroup" and "memory" in options:
            found.setdefault("v1", (point, fields[3]))
    return found


def _own_paths(root: Path) -> dict[str, str]:
    """{"v2" | "v1": this process's cgroup path} from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    return paths


def _levels(mount: Path, mount_root: str, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount point. Without a cgroup
    namespace the path is the host's (``/kubepods/pod1/abc``) and the mount shows a subtree of it
    (root ``/kubepods/pod1/abc``); with one, both are ``/``."""
    relative = path
    if mount_root not in ("", "/") and (path == mount_root or path.startswith(mount_root + "/")):
        relative = path[len(mount_root):]
    own = mount / relative.strip("/") if relative.strip("/") else mount
    if not own.is_dir():
        own = mount  # a path the mount does not show: the container's own cgroup is the mount
    levels = [own]
    while levels[-1] != mount and mount in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def cgroup_memory(root: Path = Path("/")) -> CgroupMemory | None:
    """The tightest cgroup memory limit on this process (None: none set, or not Linux).
    ``root`` is the filesystem root, for tests."""
    mounts, paths = _mounts(root), _own_paths(root)
    best: CgroupMemory | None = None
    for version, files in (("v2", _V2), ("v1", _V1)):
        if version not in mounts or version not in paths:
            continue
        mount, mount_root = mounts[version]
        limit_file, usage_file, cache_keys = files
        for level in _levels(mount, mount_root, paths[version]):
            limit = _read_int(level / limit_file)
            if limit is None:
                continue
            usage = _read_int(level / usage_file) or 0
            working_set = max(0, usage - _stat_value(level / "memory.stat", cache_keys))
            left = max(0, limit - working_set)
            if best is None or left < best.available_bytes:
                best = CgroupMemory(limit, left, str(level))
    return best


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
