"""The container's limits, read from its cgroups: a runner in Kubernetes or ``docker run
--memory/--cpus`` is killed at its memory limit and throttled past its CPU quota, while
/proc/meminfo and the CPU affinity still show the host.

The fake roots below are written in the kernel's own formats (mountinfo, /proc/self/cgroup, the
cgroup files); the last tests put a real process into a real cgroup where this machine lets us
make one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sdopt import cgroups
from sdopt.cgroups import cgroup_memory, cpu_quota

GIB = 2**30
V1_UNLIMITED = "9223372036854771712"


def _root(tmp_path: Path, mountinfo: list[str], cgroup: list[str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text("\n".join(mountinfo) + "\n")
    (tmp_path / "proc/self/cgroup").write_text("\n".join(cgroup) + "\n")
    return tmp_path


def _files(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text + "\n")


V2_MOUNT = "35 28 0:30 {root} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw"
V1_MOUNT = ("40 33 0:35 {root} /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:19 - "
            "cgroup cgroup rw,memory")


def test_a_docker_memory_limit_on_cgroup_v2_with_its_own_namespace(tmp_path):
    # docker run --memory=16g on a cgroup v2 host: the container sees its cgroup as the mount's
    # root and /proc/self/cgroup says "0::/".
    root = _root(tmp_path, [V2_MOUNT.format(root="/")], ["0::/"])
    _files(root / "sys/fs/cgroup", memory__max=str(16 * GIB), memory__current=str(6 * GIB),
           memory__stat=f"anon {4 * GIB}\nfile {2 * GIB}\ninactive_file {GIB}\nactive_file 0")
    found = cgroup_memory(root)
    assert found.limit_bytes == 16 * GIB
    assert found.available_bytes == 16 * GIB - (6 * GIB - GIB)  # the inactive cache is reclaimed


def test_a_limit_on_a_parent_slice_applies_to_the_child(tmp_path):
    # Kubernetes sets the pod's limit; the container's own cgroup may say "max".
    root = _root(tmp_path, [V2_MOUNT.format(root="/")], ["0::/kubepods/pod1/ctr"])
    base = root / "sys/fs/cgroup"
    _files(base, memory__current=str(20 * GIB))  # the root cgroup has no memory.max
    _files(base / "kubepods", memory__max="max", memory__current=str(20 * GIB))
    _files(base / "kubepods/pod1", memory__max=str(12 * GIB), memory__current=str(3 * GIB),
           memory__stat="inactive_file 0")
    _files(base / "kubepods/pod1/ctr", memory__max="max", memory__current=str(3 * GIB))
    found = cgroup_memory(root)
    assert (found.limit_bytes, found.available_bytes) == (12 * GIB, 9 * GIB)
    assert found.where.endswith("kubepods/pod1")


def test_cgroup_v1_without_a_namespace_maps_the_host_path_onto_the_mount(tmp_path):
    # Older Docker on cgroup v1: /proc/self/cgroup shows the host's path, the mount shows that
    # cgroup's subtree (mountinfo's root field is the same path).
    path = "/docker/0123abcd"
    root = _root(tmp_path, [V1_MOUNT.format(root=path)], [f"9:memory:{path}", "0::/"])
    _files(root / "sys/fs/cgroup/memory", memory__limit_in_bytes=str(8 * GIB),
           memory__usage_in_bytes=str(5 * GIB),
           memory__stat=f"cache {3 * GIB}\ninactive_file 1\ntotal_inactive_file {2 * GIB}")
    found = cgroup_memory(root)
    assert (found.limit_bytes, found.available_bytes) == (8 * GIB, 5 * GIB)


def test_no_limit_anywhere_is_none(tmp_path):
    root = _root(tmp_path, [V1_MOUNT.format(root="/"), V2_MOUNT.format(root="/")],
                 ["4:memory:/user.slice", "0::/user.slice"])
    _files(root / "sys/fs/cgroup/memory/user.slice", memory__limit_in_bytes=V1_UNLIMITED,
           memory__usage_in_bytes=str(GIB))
    _files(root / "sys/fs/cgroup/user.slice", memory__max="max", memory__current=str(GIB))
    assert cgroup_memory(root) is None
    assert cgroup_memory(tmp_path / "absent") is None  # not Linux, or no /proc


def writable_v1_cgroup(controller: str) -> Path | None:
    """This process's own cgroup v1 directory for ``controller`` where a child can be made in it
    (as root on a v1 host), or None."""
    own = [level for version, level in cgroups.levels(controller) if version == "v1"]
    return own[0] if own and os.access(own[0], os.W_OK) else None


def run_in_child_cgroup(controller: str, limits: dict[str, str], code: str) -> list[str] | None:
    """``code``'s printed words, run by a new Python process in a new child cgroup with
    ``limits`` written into it (None: no cgroup can be made here)."""
    parent = writable_v1_cgroup(controller)
    if parent is None:
        return None
    child = parent / f"sdopt-test-{uuid.uuid4().hex[:8]}"
    child.mkdir()
    try:
        for name, value in limits.items():
            (child / name).write_text(value)
        enter = "import os, sys; open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()));"
        return subprocess.run([sys.executable, "-c", enter + code, str(child)],
                              capture_output=True, text=True, timeout=120,
                              check=True).stdout.split()
    finally:
        child.rmdir()


def test_a_process_in_a_real_memory_cgroup_sees_its_limit():
    out = run_in_child_cgroup(
        "memory", {"memory.limit_in_bytes": str(3 * GIB)},
        "from sdopt import host_memory as h; c = h.cgroup_memory();"
        "print(c.limit_bytes, h.available_memory_bytes(), h.memory_limit()[1])")
    if out is None:
        pytest.skip("no writable cgroup v1 memory hierarchy here (needs root on a v1 host); "
                    "the fake-root tests above cover the formats")
    assert int(out[0]) == 3 * GIB
    assert 0 < int(out[1]) <= 3 * GIB
    assert out[2:] == ["container", "limit"]


def test_cpu_quota_in_both_formats(tmp_path):
    # docker run --cpus=1.5 on cgroup v2 (namespaced), and a pod's 500m limit on a v1 parent.
    v2 = _root(tmp_path / "v2", [V2_MOUNT.format(root="/")], ["0::/"])
    _files(v2 / "sys/fs/cgroup", cpu__max="150000 100000")
    assert cpu_quota(v2) == 1.5
    v1_mount = ("41 33 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime "
                "shared:20 - cgroup cgroup rw,cpu,cpuacct")
    v1 = _root(tmp_path / "v1", [v1_mount], ["3:cpu,cpuacct:/kubepods/pod1/ctr"])
    base = v1 / "sys/fs/cgroup/cpu,cpuacct"
    _files(base / "kubepods/pod1", cpu__cfs_quota_us="50000", cpu__cfs_period_us="100000")
    _files(base / "kubepods/pod1/ctr", cpu__cfs_quota_us="-1", cpu__cfs_period_us="100000")
    assert cpu_quota(v1) == 0.5
    none = _root(tmp_path / "none", [V2_MOUNT.format(root="/")], ["0::/user.slice"])
    _files(none / "sys/fs/cgroup/user.slice", cpu__max="max 100000")
    assert cpu_quota(none) is None
