"""The bench results in pytest-benchmark's ``--benchmark-json`` layout, so that
``pytest-benchmark compare`` and github-action-benchmark (tool: pytest) read sdopt's numbers.

The statistics are pytest-benchmark's own (:func:`sdopt.optimize.timing.sample_stats`), so the
twin file and results.json agree with what pytest-benchmark computes from the same samples.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from ..optimize.timing import sample_stats

# The pytest-benchmark release whose layout this follows.
PYTEST_BENCHMARK_VERSION = "5.3.1"


def _stats(samples: list[float]) -> dict[str, Any]:
    """pytest-benchmark 5's ``stats`` block for ``samples``."""
    stats = sample_stats(samples)
    return {**stats.as_dict(), "data": list(samples), "iterations": 1}


def pytest_benchmark_json(results: dict[str, Any]) -> dict[str, Any]:
    """The same measurements in pytest-benchmark's ``--benchmark-json`` layout, so that
    ``pytest-benchmark compare`` and github-action-benchmark (tool: pytest) read them."""
    import datetime

    cfg = results.get("config", {})
    dev = results.get("environment", {}).get("device", {})
    env = results.get("environment", {}).get("env", {})
    uname = platform.uname()
    benchmarks = []
    for name, v in results.get("variants", {}).items():
        benchmarks.append({
            "group": f"sdopt {cfg.get('model', '')} {cfg.get('height')}x{cfg.get('width')} "
                     f"{cfg.get('steps')} steps",
            "name": f"sdopt[{name}]", "fullname": f"sdopt.toml::sdopt[{name}]",
            "params": {"variant": name}, "param": name,
            "extra_info": {"label": v.get("label"), "backend": v.get("backend"),
                           "unit": "seconds per image",
                           "throughput_images_per_s": v.get("throughput_images_per_s"),
                           "stages_s": v.get("stages_s"),
                           "peak_memory_bytes": v.get("peak_memory_bytes"),
                           "memory_kind": v.get("memory_kind")},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": cfg.get("runs"),
                        "max_time": None, "min_time": None, "precision": None, "confidence": None,
                        "warmup": bool(cfg.get("warmup"))},
            "stats": _stats(v["latency_s"]["samples"]),
        })
    created = results.get("created_unix") or time.time()
    return {
        "machine_info": {
            "node": uname.node, "processor": uname.processor, "machine": uname.machine,
            "python_implementation": platform.python_implementation(),
            "python_version": env.get("python", platform.python_version()),
            "release": uname.release, "system": uname.system,
            "cpu": {"brand_raw": dev.get("extra", {}).get("host_cpu") or dev.get("name", ""),
                    "count": dev.get("cores"), "flags": list(dev.get("cpu_flags", []))},
            "gpu": dev.get("name") if dev.get("kind") == "cuda" else None,
        },
        "commit_info": {"id": os.environ.get("GITHUB_SHA", "unversioned"), "time": None,
                        "author_time": None, "dirty": False,
                        "project": os.environ.get("GITHUB_REPOSITORY", "sdopt"),
                        "branch": os.environ.get("GITHUB_HEAD_REF") or "(unknown)"},
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.fromtimestamp(created, datetime.timezone.utc).isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }
