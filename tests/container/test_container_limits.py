"""The sdopt image under ``--memory`` and ``--cpus``: sdopt inside sees the container's limits,
not the host's (sdopt/cgroups.py). Without them a candidate that needs more than the memory limit
is built anyway and the kernel kills the whole search (no table, no report, only exit 137), and
the thread pools hold one thread per host CPU, throttled by the quota."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.container

GIB = 2**30
PROBE = ("from sdopt.host_memory import available_memory_bytes, memory_limit; "
         "from sdopt.device import detect; from sdopt.cpu_threads import fit_torch_threads; "
         "import torch; fit_torch_threads(); d = detect('cpu'); "
         "print(*memory_limit(), available_memory_bytes(), d.memory_gb, d.cores, "
         "torch.get_num_threads(), sep=';')")


def _probe(podman: str, image: str, *options: str) -> list[str]:
    proc = subprocess.run([podman, "run", "--rm", *options, "--entrypoint", "python", image,
                           "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1].split(";")


def test_the_image_sees_its_memory_limit_and_cpu_quota(podman, sdopt_image):
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("one CPU here: a quota below the host's CPUs needs at least two")
    limit, source, available, memory_gb, cores, threads = _probe(
        podman, sdopt_image, "--memory", "3g", "--cpus", "1", "--user", "1001:1001")
    assert (int(limit), source) == (3 * GIB, "container limit")
    assert 0 < int(available) <= 3 * GIB
    assert float(memory_gb) == 3.0
    assert (cores, threads) == ("1", "1")
    # without limits: the machine's RAM and CPUs again
    limit, source, _, _, cores, _ = _probe(podman, sdopt_image, "--user", "1001:1001")
    assert source == "RAM" and int(limit) > 3 * GIB
    assert int(cores) == cpus
