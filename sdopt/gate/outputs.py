"""Which directories the gate's commands may replace or delete (``--overwrite``,
``--update-baseline``, ``reproduce --overwrite``).

The paths come from ``sdopt.toml``, which a pull request can edit: ``output_dir = ".."`` or
``baseline.path = "."`` must not turn a normal run into deleting the repository. So only a
directory sdopt made is replaced (store.py's marker, or, for what versions before the marker
wrote, a results.json that sdopt's reader accepts), and never the repository root, the config's
folder, HOME or an ancestor of them. Commands check this before minutes of benchmarking and
store.py checks it again right before the rename.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SdoptError
from ..store import check_replaceable, has_marker
from .git import find_repo_root
from .results import read_results

# The marker kind of a results directory (bench, gate, same-job and baseline outputs).
RESULTS_OUTPUT = "results"


def made_by_sdopt(path: Path) -> bool:
    """A results directory sdopt wrote: its marker says so, or (written before the marker) its
    results.json is valid. A saved model or a model folder sdopt wrote is not one."""
    if has_marker(path, RESULTS_OUTPUT):
        return True
    try:
        read_results(path)
    except SdoptError:
        return False
    return True


def protected_dirs(config_dir: str | os.PathLike | None) -> list[Path]:
    """The config's folder and the git repository holding it (HOME and the working directory
    are always protected by store.py)."""
    if config_dir is None:
        return []
    folder = Path(config_dir).resolve()
    root = find_repo_root(folder)
    return [folder] + ([root] if root is not None else [])


def check_output(target: str | os.PathLike, what: str, config_dir: str | os.PathLike | None
                 ) -> list[Path]:
    """Refuse an output that sdopt may not replace; returns the protected directories, to pass
    on to store.atomic_directory for its check at rename time."""
    protected = protected_dirs(config_dir)
    check_replaceable(target, what=what, protected=protected, made_by_sdopt=made_by_sdopt)
    return protected
