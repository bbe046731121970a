"""Thread pools capped at the container's CPU quota (why: sdopt/cpu_threads.py). The unit tests
fake the quota; the last one runs a real process in a real cgroup with a quota where this machine
lets a test make one."""

from __future__ import annotations

import pytest
import torch

from sdopt import cpu_threads

from .test_cgroups import run_in_child_cgroup


@pytest.fixture
def quota(monkeypatch):
    """Set the quota (CPUs, or None) and the affinity (4 CPUs) the module sees."""
    monkeypatch.setattr(cpu_threads, "affinity_cpus", lambda: 4)

    def set_quota(cpus):
        monkeypatch.setattr(cpu_threads, "cpu_quota", lambda: cpus)
    return set_quota


@pytest.fixture
def torch_threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_quota_rounds_down_and_only_counts_below_the_affinity(quota):
    for cpus, threads in ((None, None), (1.5, 1), (0.3, 1), (2.0, 2), (4.0, None), (8.0, None)):
        quota(cpus)
        assert cpu_threads.quota_threads() == threads, cpus
        assert cpu_threads.usable_cpus() == (threads or 4)


def test_torch_is_capped_but_never_raised(quota, torch_threads_restored):
    quota(2.5)
    torch.set_num_threads(4)
    assert cpu_threads.fit_torch_threads() == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(1)  # the user asked for fewer (OMP_NUM_THREADS, set_num_threads)
    cpu_threads.fit_torch_threads()
    assert torch.get_num_threads() == 1
    quota(None)
    torch.set_num_threads(3)
    assert cpu_threads.fit_torch_threads() is None and torch.get_num_threads() == 3


def test_openvino_and_onnxruntime_get_the_cap(quota):
    ort = pytest.importorskip("onnxruntime")
    quota(1.0)
    assert cpu_threads.openvino_thread_config() == {"INFERENCE_NUM_THREADS": 1}
    from sdopt.backends.onnxruntime import _session_options

    assert _session_options().intra_op_num_threads == 1
    quota(None)
    assert cpu_threads.openvino_thread_config() == {}
    assert _session_options().intra_op_num_threads == ort.SessionOptions().intra_op_num_threads


def test_openvino_compiles_with_the_cap(quota):
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    from sdopt.backends.openvino import CompiledPerShape

    x = ops.parameter([-1, 8], ov.Type.f32, name="x")
    model = ov.Model([ops.relu(x)], [x])
    quota(1.0)
    compiled = CompiledPerShape(model, "f32").compile_for([(2, 8)])
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_a_process_under_a_real_cpu_quota_runs_that_many_threads():
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU here: a quota below the affinity needs at least two")
    out = run_in_child_cgroup(
        "cpu", {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"},
        "import torch; torch.set_num_threads(2); from sdopt import cpu_threads as c;"
        "from sdopt.device import detect; c.fit_torch_threads();"
        "print(c.cpu_quota(), torch.get_num_threads(), detect('cpu').cores)")
    if out is None:
        pytest.skip("no writable cgroup v1 cpu hierarchy here (needs root on a v1 host); the "
                    "fake-root tests in test_cgroups.py cover the formats")
    assert out == ["1.0", "1", "1"]
