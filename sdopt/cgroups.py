"""This process's Linux control groups and the limits they set: the memory limit and the CPU
quota of its container.

``/proc/meminfo`` and the CPU affinity describe the machine, not the container. A runner in
Kubernetes (actions-runner-controller, the usual way to host GPU runners), ``docker run
--memory/--cpus`` or a systemd slice caps the process with a cgroup: past the memory limit the
kernel kills it, and past the CPU quota it stops all its threads until the next period. Both
cgroup versions are read, at every level from the process's own cgroup up to the mount's root (a
limit set on a parent slice, such as a pod's, applies too); the tightest level wins.
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
_MEMORY = {"v2": ("memory.max", "memory.current", ("inactive_file",)),
           "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes",
                  ("total_inactive_file", "inactive_file"))}


def _mounts(root: Path, controller: str) -> dict[str, tuple[Path, str]]:
    """{"v2" | "v1": (mount point, root of the mount inside the hierarchy)} from mountinfo, the
    v1 one being the hierarchy that holds ``controller``."""
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
        elif fstype == "cgroup" and controller in options:
            found.setdefault("v1", (point, fields[3]))
    return found


def _own_paths(root: Path, controller: str) -> dict[str, str]:
    """{"v2" | "v1": this process's cgroup path} from /proc/self/cgroup (v1: the hierarchy that
    holds ``controller``)."""
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
        elif controller in controllers.split(","):
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


def levels(controller: str, root: Path = Path("/")) -> list[tuple[str, Path]]:
    """(version, directory) of this process's cgroup and each ancestor up to the mount, for
    ``controller`` ("memory", "cpu"), v2 first; empty where there is none (not Linux)."""
    mounts, paths = _mounts(root, controller), _own_paths(root, controller)
    try:
        return [(version, level) for version in ("v2", "v1")
                if version in mounts and version in paths
                for level in _levels(*mounts[version], paths[version])]
    except OSError:  # a cgroup tree this user may not read (a rootless container): no limits
        return []


def cgroup_memory(root: Path = Path("/")) -> CgroupMemory | None:
    """The tightest cgroup memory limit on this process (None: none set, or not Linux).
    ``root`` is the filesystem root, for tests."""
    best: CgroupMemory | None = None
    for version, level in levels("memory", root):
        limit_file, usage_file, cache_keys = _MEMORY[version]
        limit = _read_int(level / limit_file)
        if limit is None:
            continue
        usage = _read_int(level / usage_file) or 0
        working_set = max(0, usage - _stat_value(level / "memory.stat", cache_keys))
        left = max(0, limit - working_set)
        if best is None or left < best.available_bytes:
            best = CgroupMemory(limit, left, str(level))
    return best


def cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CFS quota on this process in CPUs (``docker run --cpus=2``, a Kubernetes CPU
    limit: 2.0), None where none is set. v2 writes ``"<quota> <period>"`` in cpu.max (``max``:
    none); v1 cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us."""
    best: float | None = None
    for version, level in levels("cpu", root):
        if version == "v2":
            try:
                quota, _, period = (level / "cpu.max").read_text(encoding="ascii").partition(" ")
                cpus = int(quota) / int(period)
            except (OSError, UnicodeDecodeError, ValueError, ZeroDivisionError):
                continue  # "max", or no cpu controller enabled on this level
        else:
            quota, period = _read_int(level / "cpu.cfs_quota_us"), _read_int(
                level / "cpu.cfs_period_us")
            if not quota or not period:
                continue  # -1 (none) reads as None
            cpus = quota / period
        if cpus > 0 and (best is None or cpus < best):
            best = cpus
    return best
