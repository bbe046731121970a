"""The memory the search may use: the smaller of the machine's and its container's."""

from sdopt import host_memory
from sdopt.cgroups import CgroupMemory

GIB = 2**30


def test_the_search_sees_the_smaller_of_the_machine_and_the_container(monkeypatch):
    limited = CgroupMemory(limit_bytes=16 * GIB, available_bytes=5 * GIB, where="x")
    monkeypatch.setattr(host_memory, "_psutil_memory", lambda: (24 * GIB, 20 * GIB))
    monkeypatch.setattr(host_memory, "cgroup_memory", lambda: limited)
    assert host_memory.available_memory_bytes() == 5 * GIB
    assert host_memory.memory_limit() == (16 * GIB, "container limit")
    monkeypatch.setattr(host_memory, "cgroup_memory", lambda: None)
    assert host_memory.available_memory_bytes() == 20 * GIB
    assert host_memory.memory_limit() == (24 * GIB, "RAM")
