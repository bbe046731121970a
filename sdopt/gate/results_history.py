"""The results history: one small JSON file per finished run, kept in a directory, for the
report's "Trend over history" chart (``sdopt history``; the action's ``history`` input).

Not the baseline's history (:mod:`sdopt.gate.history`), which the gate's statistics use and which
lives inside a committed baseline; this one is what a project looks back at, commit by commit.
Each run is summarised the same way (:func:`sdopt.gate.history.run_summary`) plus its commit and
verdict.

The directory is append-only: a run is written once into a file of its own (named by time and
commit, linked into place so that a reader never sees half of it and nothing is replaced), so
two jobs adding at once cannot lose each other's run. It is bounded: past ``max_runs`` the oldest
entries are deleted, and only files that sdopt's entry name pattern matches in a directory that
carries sdopt's marker. The files come back from caches and branches that others may write, so
each is read through the validating reader (one error line naming the file and field) and files
larger than any entry sdopt writes are refused unread.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from ..errors import SdoptError
from ..store import (MARKER_NAME, atomic_directory, check_plain_directory, create_new_text,
                     marker_kind)
from .history import run_summary, same_kind
from .pytest_benchmark import commit_info
from .results import (RUN_ENTRY_KIND, RUN_ENTRY_SCHEMA_VERSION, VERDICTS, end_to_end_speedup,
                      finite, read_run_entry, validate)

# The marker kind of a results history directory (store.py's rule for what sdopt may delete).
RUN_HISTORY_OUTPUT = "run-history"
DEFAULT_MAX_RUNS = 500
MAX_RUNS_LIMIT = 100_000
# An entry is about 1 KiB; anything far larger was not written by sdopt.
MAX_ENTRY_BYTES = 64 * 1024
# <UTC time it was added, to the microsecond>_<commit>_<random>.json: names sort in the order
# the runs were added (the runs' own times may tie or come out of order), which is what the bound
# drops first.
ENTRY_NAME = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)_([0-9A-Za-z.-]{1,40})_([0-9a-f]{8})\.json")


def entry_for(results: dict[str, Any], *, commit: dict[str, Any],
              verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run as the results history keeps it: the baseline history's summary of the run (so
    "the same machine and workload" means the same in both), its commit, labels, IQRs and
    verdict."""
    variants = results.get("variants") or {}
    created = results.get("created_unix")
    state = (verdict or {}).get("verdict")
    return {"schema_version": RUN_ENTRY_SCHEMA_VERSION, "kind": RUN_ENTRY_KIND,
            **run_summary(results),
            "created_unix": int(created) if isinstance(created, (int, float)) else 0,
            "commit": {k: commit.get(k) for k in ("id", "time", "author_time", "dirty",
                                                  "project", "branch") if k in commit},
            "iqr_s": {name: v["latency_s"]["iqr"] for name, v in variants.items()
                      if isinstance(v.get("latency_s", {}).get("iqr"), (int, float))},
            "labels": {name: v.get("label") for name, v in variants.items()},
            "verdict": state if state in VERDICTS else None,
            "speedup": end_to_end_speedup(results)}


def _check_dir(directory: Path) -> None:
    """A results history directory is sdopt's: anything else is never written into."""
    check_plain_directory(directory, "history", "a directory written by 'sdopt history add'")
    if directory.is_dir() and any(directory.iterdir()):
        kind = marker_kind(directory)
        if kind != RUN_HISTORY_OUTPUT:
            why = (f"it holds another kind of sdopt output ({kind})" if kind else
                   f"it has no {MARKER_NAME} of a results history")
            raise SdoptError(f"history '{directory}' was not written by 'sdopt history add': "
                             f"{why}; choose another directory")


def entry_files(directory: str | os.PathLike) -> list[Path]:
    """The entries of a history directory, in the order they were added (their names start
    with that time)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    _check_dir(directory)
    return sorted(p for p in directory.iterdir() if ENTRY_NAME.fullmatch(p.name))


def read_runs(directory: str | os.PathLike, *, last: int | None = None) -> list[dict[str, Any]]:
    """The runs of a history directory (none when it does not exist yet), in the order they were
    added; with ``last``, only the last ``last``. Each file is validated."""
    files = entry_files(directory)
    if last is not None:
        files = files[-last:] if last > 0 else []
    runs = []
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise SdoptError(f"results history entry '{path}' is not a regular file (a link?): "
                             "sdopt reads only the files it wrote")
        if path.stat().st_size > MAX_ENTRY_BYTES:
            raise SdoptError(f"results history entry '{path}' is {path.stat().st_size} bytes, "
                             f"more than any entry sdopt writes ({MAX_ENTRY_BYTES}): refused "
                             "unread")
        runs.append(read_run_entry(path))
    return runs


def runs_like(runs: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of the same machine and workload as ``results`` (what a trend can compare)."""
    summary = run_summary(results)
    return [run for run in runs if same_kind(run, summary)]


def entry_name(entry: dict[str, Any]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc)
    commit = re.sub(r"[^0-9A-Za-z.-]", "-", str(entry["commit"].get("id") or "unversioned"))
    return (f"{when:%Y%m%dT%H%M%S.%fZ}_{commit[:12] or 'unversioned'}_"
            f"{secrets.token_hex(4)}.json")


def check_max_runs(max_runs: int, what: str = "--max-runs") -> int:
    if not 1 <= max_runs <= MAX_RUNS_LIMIT:
        raise SdoptError(f"{what} is {max_runs}: expected 1 to {MAX_RUNS_LIMIT}")
    return max_runs


def entry_text(entry: dict[str, Any]) -> str:
    """An entry's file contents, checked against the schema before anything is written."""
    text = json.dumps(finite(entry), indent=2) + "\n"
    validate(json.loads(text), RUN_ENTRY_KIND, "(new entry)", "results history entry")
    return text


def pruned_names(names: list[str], max_runs: int) -> list[str]:
    """The entries among ``names`` (a history's file names, the new one included) that the bound
    deletes: the oldest beyond ``max_runs``. Names that are not entries are never counted nor
    deleted. The one rule for a directory and for a branch (action/history_branch.py)."""
    entries = sorted(n for n in names if ENTRY_NAME.fullmatch(n))
    return entries[:max(0, len(entries) - check_max_runs(max_runs))]


def add_run(directory: str | os.PathLike, entry: dict[str, Any], *,
            max_runs: int = DEFAULT_MAX_RUNS) -> tuple[Path, list[Path]]:
    """Write ``entry`` as a new file in ``directory`` (made, with sdopt's marker, when missing
    or empty), then delete the oldest entries beyond ``max_runs``. Returns the new file and the
    deleted ones."""
    check_max_runs(max_runs)
    directory = Path(directory)
    _check_dir(directory)
    if not directory.is_dir() or not any(directory.iterdir()):
        with atomic_directory(directory, kind=RUN_HISTORY_OUTPUT):
            pass
    text = entry_text(entry)
    for _ in range(10):
        target = directory / entry_name(entry)
        try:
            create_new_text(target, text)
            break
        except FileExistsError:
            continue
    else:
        raise SdoptError(f"history '{directory}': no free entry name")
    gone = set(pruned_names([p.name for p in entry_files(directory)], max_runs))
    pruned = [p for p in entry_files(directory) if p.name in gone]
    for old in pruned:
        old.unlink(missing_ok=True)
    return target, pruned


def copy_entries(directory: str | os.PathLike, files: dict[str, bytes], *, source: str
                 ) -> list[dict[str, Any]]:
    """A new history ``directory`` (sdopt's marker) holding ``files``, a history kept elsewhere
    (a branch: ``source`` names it), each checked as :func:`read_runs` checks a directory's;
    returns the runs. Only entry names are written, each file at most MAX_ENTRY_BYTES."""
    for name, data in files.items():
        if not ENTRY_NAME.fullmatch(name):
            raise SdoptError(f"{source}: '{name}' is not a results history entry name")
        if len(data) > MAX_ENTRY_BYTES:
            raise SdoptError(f"{source}: entry '{name}' is {len(data)} bytes, more than any "
                             f"entry sdopt writes ({MAX_ENTRY_BYTES}): refused unread")
    with atomic_directory(directory, kind=RUN_HISTORY_OUTPUT) as staged:
        for name, data in files.items():
            (staged / name).write_bytes(data)
    try:
        return read_runs(directory)
    except SdoptError as exc:
        raise SdoptError(f"{source}: {exc}") from None


def add_results(directory: str | os.PathLike, results: dict[str, Any], *,
                verdict: dict[str, Any] | None = None, repo: str | os.PathLike = ".",
                max_runs: int = DEFAULT_MAX_RUNS) -> tuple[Path, list[Path]]:
    """Add a results document's run, with the commit checked out in ``repo`` (read from git as
    the pytest-benchmark export reads it)."""
    return add_run(directory, entry_for(results, commit=commit_info(repo), verdict=verdict),
                   max_runs=max_runs)


def as_run(document: dict[str, Any], verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """A history entry as it is, or a results document summarised as one (no commit): what the
    trend chart draws, whichever it was given."""
    if document.get("kind") == RUN_ENTRY_KIND:
        return document
    return entry_for(document, commit={}, verdict=verdict)
