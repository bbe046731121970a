"""The bench results in pytest-benchmark's layout, so that tools built for it read sdopt's numbers:
``pytest-benchmark compare`` / ``list`` and github-action-benchmark (``tool: pytest``, which reads
each benchmark's ``fullname``, ``stats.ops``, ``stats.stddev``, ``stats.mean`` and
``stats.rounds``).

Everything follows pytest-benchmark 5.3.1's own code rather than a reading of its output: the
statistics are its ``Stats`` (:func:`sdopt.optimize.timing.sample_stats`), ``machine_info`` is its
``pytest_benchmark_generate_machine_info`` hook, ``commit_info`` runs the git commands of its
``get_commit_info`` (through sdopt's git helper, which reads a repository owned by another user
in a CI container), and :func:`save_to_storage` writes what ``--benchmark-autosave`` would:
``STORAGE/<machine id>/NNNN_<commit>_<time>.json``, where ``pytest-benchmark list`` and
``compare`` look when given no paths.

``fullname`` is github-action-benchmark's series key, so it names what makes one series: the
config file (relative to the repository), model, image size, steps, variant and device kind
(with the GPU's name: a CPU's model changes between hosted runners, a GPU's does not).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..errors import SdoptError
from ..optimize.timing import sample_stats
from ..store import check_plain_directory, create_new_text
from .git import enclosing_worktree, run_git

# The pytest-benchmark release whose layout this follows.
PYTEST_BENCHMARK_VERSION = "5.3.1"
_STORAGE_FILE = re.compile(r"([0-9]{4})_.*\.json")


def _stats(samples: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for ``samples`` (one round per pipeline call, its time
    per image: ``iterations`` 1)."""
    stats = sample_stats(samples)
    return {**stats.as_dict(), "data": list(samples), "iterations": 1}


@functools.lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """pytest-benchmark's machine_info of this process (the one that measured: the twin file is
    written by the bench that timed it). Its CPU probe (py-cpuinfo) may fail in odd sandboxes;
    then ``cpu`` holds what sdopt's own probe knows."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    try:
        return pytest_benchmark_generate_machine_info()
    except Exception:  # noqa: BLE001 - a probe failure must not lose the benchmark
        from ..device import detect

        cpu = detect("cpu")
        info = {"node": platform.node(), "processor": platform.processor(),
                "machine": platform.machine(), "python_compiler": platform.python_compiler(),
                "python_implementation": platform.python_implementation(),
                "python_implementation_version": platform.python_version(),
                "python_version": platform.python_version(),
                "python_build": list(platform.python_build()), "release": platform.release(),
                "system": platform.system()}
        return {**info, "cpu": {"brand_raw": cpu.name, "count": cpu.cores}}


def machine_id() -> str:
    """The storage folder pytest-benchmark uses for this interpreter
    (``Linux-CPython-3.11-64bit``)."""
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def _git(args: list[str], cwd: Path) -> str:
    proc = run_git(args, cwd, timeout=60)
    return proc.stdout.decode(errors="replace").strip()


def project_name(start: str | os.PathLike) -> str:
    """pytest-benchmark's project name: the last part of ``remote.origin.url``, else the folder
    name (of the repository here, not of the working directory)."""
    root = enclosing_worktree(start)
    if root is not None:
        try:
            proc = run_git(["config", "--local", "remote.origin.url"], root, check=False,
                           timeout=60)
        except SdoptError:  # no git command: the folder's name, as pytest-benchmark falls back
            return root.name
        url = proc.stdout.decode(errors="replace")
        parts = [p for p in re.split(r"[/:\s\\]|\.git", url) if p]
        if proc.returncode == 0 and parts:
            return parts[-1].strip()
    return (root or Path(start).resolve()).name


def commit_info(start: str | os.PathLike) -> dict[str, Any]:
    """pytest-benchmark's ``get_commit_info`` for the repository holding ``start`` (the
    config's folder): id, commit and author time, dirty, project, branch. Outside a repository
    the id is 'unversioned'; a git failure gives 'unknown' and the error, as pytest-benchmark
    does."""
    start = Path(start)
    info: dict[str, Any] = {"id": "unversioned", "time": None, "author_time": None,
                            "dirty": False, "project": project_name(start), "branch": "(unknown)"}
    if enclosing_worktree(start) is None:
        return info
    try:
        desc = _git(["describe", "--dirty", "--always", "--long", "--abbrev=40"], start).split("-")
        if desc[-1].strip() == "dirty":
            info["dirty"] = True
            desc.pop()
        info["id"] = desc[-1].strip("g")
        info["time"] = _git(["show", "-s", "--pretty=format:%cI"], start)
        info["author_time"] = _git(["show", "-s", "--pretty=format:%aI"], start)
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], start)
        info["branch"] = "(detached head)" if branch == "HEAD" else branch
    except SdoptError as exc:
        info.update(id="unknown", error=str(exc))
    return info


def series_param(results: dict[str, Any], variant: str) -> str:
    """The bracketed part of a benchmark's name: what tells one series from another."""
    cfg = results.get("config") or {}
    dev = (results.get("environment") or {}).get("device") or {}
    device = str(dev.get("kind") or "device")
    if device != "cpu" and dev.get("name"):
        device += f":{dev['name']}"
    model = str(cfg.get("model") or "model")
    return (f"{model}-{cfg.get('width')}x{cfg.get('height')}-{cfg.get('steps')}steps-{variant}-"
            f"{device}")


def pytest_benchmark_json(results: dict[str, Any], *, config_path: str | None = None,
                          repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The same measurements in pytest-benchmark's ``--benchmark-json`` layout.

    ``config_path``: the config file, relative to the repository (the first part of every
    ``fullname``); ``repo``: a folder in the repository whose commit is recorded (default: the
    working directory, as pytest-benchmark)."""
    cfg = results.get("config") or {}
    source = config_path or "sdopt.toml"
    benchmarks = []
    for name, v in (results.get("variants") or {}).items():
        samples = v["latency_s"]["samples"]
        param = series_param(results, name)
        benchmarks.append({
            "group": f"sdopt {cfg.get('model', '')} {cfg.get('width')}x{cfg.get('height')} "
                     f"{cfg.get('steps')} steps",
            "name": f"sdopt[{param}]", "fullname": f"{source}::sdopt[{param}]",
            "params": {"model": cfg.get("model"), "width": cfg.get("width"),
                       "height": cfg.get("height"), "steps": cfg.get("steps"), "variant": name},
            "param": param,
            "extra_info": {"variant": name, "label": v.get("label"), "backend": v.get("backend"),
                           "unit": "seconds per image",
                           "throughput_images_per_s": v.get("throughput_images_per_s"),
                           "stages_s": v.get("stages_s"),
                           "peak_memory_bytes": v.get("peak_memory_bytes"),
                           "memory_kind": v.get("memory_kind"),
                           "sdopt_version": results.get("sdopt_version")},
            # What pytest-benchmark would have run to get these rounds: a fixed number of them
            # (max_time 0 makes min_rounds the count), one call each, after the warm-up calls.
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(samples),
                        "max_time": 0.0, "min_time": 0.0, "precision": None, "confidence": None,
                        "warmup": _warmup_calls(cfg) or False},
            "stats": _stats(samples),
        })
    created = results.get("created_unix")
    when = (datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
            if isinstance(created, (int, float)) else datetime.datetime.now(datetime.timezone.utc))
    return {
        "machine_info": {**machine_info(),
                         "sdopt_device": (results.get("environment") or {}).get("device")},
        "commit_info": commit_info(Path(repo) if repo is not None else Path.cwd()),
        "benchmarks": benchmarks,
        "datetime": when.isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }


def _warmup_calls(cfg: dict[str, Any]) -> int:
    """Warm-up pipeline calls per variant (bench.warmup rounds over every batch of prompts)."""
    warmup, batch = cfg.get("warmup"), cfg.get("batch") or 1
    images = len(cfg.get("prompts") or []) * len(cfg.get("seeds") or [])
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup <= 0:
        return 0
    return warmup * max(1, -(-images // batch)) if images else warmup


def storage_tag(document: dict[str, Any]) -> str:
    """``--benchmark-autosave``'s file name tag: ``<commit>_<YYYYmmdd_HHMMSS>``, with
    ``_uncommitted-changes`` for a dirty tree."""
    commit = document.get("commit_info") or {}
    when = datetime.datetime.fromisoformat(document["datetime"]).astimezone(datetime.timezone.utc)
    parts = [re.sub(r"[^0-9A-Za-z.-]", "_", str(commit.get("id") or "unversioned")),
             when.strftime("%Y%m%d_%H%M%S")]
    if commit.get("dirty"):
        parts.append("uncommitted-changes")
    return "_".join(parts)


def check_storage(storage: str | os.PathLike) -> Path:
    """Refuse a storage that is a file or a link (before minutes of benchmarking); returns the
    folder of this machine's runs in it."""
    storage = Path(storage)
    folder = storage / machine_id()
    for path in (storage, folder):
        check_plain_directory(path, "--pytest-benchmark-storage",
                              "a directory (pytest-benchmark's storage, e.g. .benchmarks)")
    return folder


def save_to_storage(document: dict[str, Any], storage: str | os.PathLike) -> Path:
    """Add ``document`` to a pytest-benchmark file storage as its next numbered run
    (``STORAGE/<machine id>/NNNN_<tag>.json``), never replacing a file: the storage is the
    user's (their own pytest-benchmark runs may be in it)."""
    storage = Path(storage)
    what = "--pytest-benchmark-storage"
    folder = check_storage(storage)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(document, ensure_ascii=True, indent=4)
        for _ in range(100):  # another writer may take a number between the scan and the link
            numbers = [int(m.group(1)) for p in folder.iterdir()
                       if (m := _STORAGE_FILE.fullmatch(p.name))]
            target = folder / f"{max(numbers, default=0) + 1:04d}_{storage_tag(document)}.json"
            try:
                create_new_text(target, text)
                return target
            except FileExistsError:
                continue
    except OSError as exc:
        raise SdoptError(f"{what} '{storage}' cannot be written: {exc.strerror or exc}") from None
    raise SdoptError(f"{what} '{storage}': no free run number in '{folder}'")
