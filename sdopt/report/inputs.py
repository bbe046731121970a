"""Reading what the report shows: results directories, verdict.json, results histories.

Through sdopt.gate.results, the one reader: a report is often made from a downloaded artifact or
a committed baseline that anyone could have edited, and it must refuse what the gate would refuse
(one line naming the file and the field) rather than show a half-read document.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from ..gate.results import read_results, read_verdict, results_file
from ..gate.results_history import read_runs

# The newest runs of a results history that the trend chart shows.
TREND_RUNS = 200


def load_results(path: str | os.PathLike, what: str = "results") -> tuple[dict[str, Any], Path]:
    """A results directory (or its results.json): the document and the directory its image
    paths are relative to."""
    file = results_file(path)
    return read_results(file, what=what), file.parent


def load_verdict(path: str | os.PathLike) -> dict[str, Any]:
    """A verdict.json (or the directory holding it)."""
    return read_verdict(path)


def load_history(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Earlier runs for the trend chart: results history directories (``sdopt history add``;
    their newest TREND_RUNS runs), results directories or results.json files."""
    runs: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if path.is_dir() and not results_file(path).exists():
            runs += read_runs(path, last=TREND_RUNS)
        else:
            runs.append(load_results(path, "history results")[0])
    return runs
