"""The sdopt image under ``--memory``: the search inside sees the container's limit, not the
host's memory (host_memory.py). Without it a candidate that needs more than the limit is built
anyway and the kernel kills the whole search: no table, no report, only exit 137."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.container

GIB = 2**30
PROBE = ("from sdopt.host_memory import available_memory_bytes, memory_limit; "
         "from sdopt.device import detect; "
         "print(*memory_limit(), available_memory_bytes(), detect('cpu').memory_gb, sep=';')")


def _probe(podman: str, image: str, *options: str) -> list[str]:
    proc = subprocess.run([podman, "run", "--rm", *options, "--entrypoint", "python", image,
                           "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1].split(";")


def test_the_image_sees_its_memory_limit(podman, sdopt_image):
    limit, source, available, memory_gb = _probe(podman, sdopt_image, "--memory", "3g",
                                                 "--user", "1001:1001")
    assert (int(limit), source) == (3 * GIB, "container limit")
    assert 0 < int(available) <= 3 * GIB
    assert float(memory_gb) == 3.0
    # without a limit it is the machine's RAM again
    limit, source, *_ = _probe(podman, sdopt_image, "--user", "1001:1001")
    assert source == "RAM" and int(limit) > 3 * GIB
