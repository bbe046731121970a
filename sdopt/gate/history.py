"""The baseline's history of runs: what one machine's run-to-run spread looks like.

Samples of one run cannot tell how far the next run will drift (they share the run's state), so
the gate learns the spread from whole runs: every ``sdopt baseline save`` appends a one-line
summary of its run (medians, in-run ratios) to ``history.json`` next to the baseline, keeping
only runs of the same machine and workload (size, steps, ... and the start images and masks:
:func:`workload`), newest last, at most ``MAX_RUNS``. The latency checks
(:mod:`sdopt.gate.latency`) treat each summary as one observation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..store import write_json
from .latency import in_run_ratio
from .results import (DEVICE_KEYS, HISTORY_KIND, HISTORY_NAME, HISTORY_SCHEMA_VERSION,
                      IMAGE_HASH_KEYS, read_history_file)

MAX_RUNS = 30
# With DEVICE_KEYS, what must agree for two runs to be samples of one machine's spread.
_WORKLOAD_KEYS = ("model", "height", "width", "steps", "guidance_scale", "batch")
# A start image's or mask's hash in a workload: the first characters of results.json's sha256
# (as the decision cache's key shortens it), enough to tell pictures apart, small in an entry.
_IMAGE_HASH_CHARS = 16


def workload(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' timings one series: the workload keys, and the start images and
    masks (IMAGE_HASH_KEYS) when a run was given any. Other pictures are another workload, as
    compare refuses to compare them (compare.input_image_differences). A run without given
    images (text-to-image, or sdopt's default images only) has no image keys, so its workload
    reads as it did before sdopt recorded them."""
    out = {k: config.get(k) for k in _WORKLOAD_KEYS}
    for key in IMAGE_HASH_KEYS:
        hashes = config.get(key)
        if isinstance(hashes, list) and any(isinstance(h, str) for h in hashes):
            out[key] = [h[:_IMAGE_HASH_CHARS] if isinstance(h, str) else None for h in hashes]
    return out


def run_summary(results: dict[str, Any]) -> dict[str, Any]:
    """One run as the history keeps it."""
    device = (results.get("environment") or {}).get("device") or {}
    config = results.get("config") or {}
    variants = results.get("variants") or {}
    medians = {name: v["latency_s"]["median"] for name, v in variants.items()
               if isinstance(v.get("latency_s", {}).get("median"), (int, float))}
    ratios = {name: r for name in variants if (r := in_run_ratio(results, name)) is not None}
    return {"created_unix": results.get("created_unix"),
            "sdopt_version": results.get("sdopt_version"),
            "device": {k: device.get(k) for k in DEVICE_KEYS},
            "workload": workload(config),
            "samples": max((len(v["latency_s"]["samples"]) for v in variants.values()), default=0),
            "medians_s": medians, "ratios": ratios}


def same_kind(run: dict[str, Any], summary: dict[str, Any]) -> bool:
    return run.get("device") == summary["device"] and run.get("workload") == summary["workload"]


def read_history(baseline_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs recorded next to a baseline (none for baselines saved before histories)."""
    path = Path(baseline_dir) / HISTORY_NAME
    if not path.is_file():
        return []
    return read_history_file(path)["runs"]


def runs_like(history: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    """The history's runs of the same machine and workload as ``results``."""
    summary = run_summary(results)
    return [run for run in history if same_kind(run, summary)]


def with_run(history: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    """``history`` after adding ``results``' run: runs of another machine or workload are dropped
    (their spread says nothing about this one), then the newest ``MAX_RUNS`` are kept."""
    summary = run_summary(results)
    return ([run for run in history if same_kind(run, summary)] + [summary])[-MAX_RUNS:]


def write_history(directory: str | os.PathLike, runs: list[dict[str, Any]]) -> None:
    write_json(Path(directory) / HISTORY_NAME, {"schema_version": HISTORY_SCHEMA_VERSION,
                                                 "kind": HISTORY_KIND, "runs": runs})
