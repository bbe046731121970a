"""Where the gate's reference measurements come from, and how they are kept.

A baseline is an ordinary results directory (results.json, its pytest-benchmark twin, images/).
It can be read from a path, from a git ref of the user's repository (the base branch's committed
baseline: ``git:origin/main:.sdopt/baseline``), or from a CI artifact directory as downloaded
(where results.json may sit one or two folders down). Saving never replaces an existing baseline
unless asked (``--update-baseline``), and goes through a temporary directory and a rename, so a
failed save leaves the old baseline intact. An update keeps the old baseline's runs in
``history.json`` (:mod:`sdopt.gate.history`): the gate learns the machine's run-to-run spread
from them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import SdoptError
from ..store import atomic_directory, exists_and_not_empty
from .compare import Inputs, safe_join
from .git import repo_root, run_git
from .outputs import RESULTS_OUTPUT, check_output, made_by_sdopt
from .history import read_history, run_summary, with_run, write_history
from .results import (HISTORY_NAME, PYTEST_BENCHMARK_NAME, RESULTS_NAME, find_results_dir,
                      read_results)

GIT_PREFIX = "git:"


def save_baseline(results_dir: str | os.PathLike, target: str | os.PathLike, *,
                  update: bool = False, config_dir: str | os.PathLike | None = None) -> Path:
    """Copy a results directory (validated) to ``target`` as the new baseline. ``update``
    replaces only a baseline sdopt made, never ``config_dir`` (the config's folder), its
    repository, HOME or an ancestor of them (gate.outputs)."""
    results_dir, target = Path(results_dir), Path(target)
    results = read_results(results_dir, what="results")
    if results_dir.is_file():
        results_dir = results_dir.parent
    if not update and exists_and_not_empty(target):
        raise SdoptError(f"baseline '{target}' already exists: pass --update-baseline to replace "
                         "it (the old one is kept otherwise)")
    protected = check_output(target, "baseline", config_dir)
    if target.resolve() == results_dir.resolve():
        raise SdoptError(f"--results '{results_dir}' is the baseline directory itself: nothing "
                         "to save")
    paths = {rec["path"] for v in results["variants"].values() for rec in v.get("images", [])}
    with atomic_directory(target, overwrite=update, kind=RESULTS_OUTPUT, protected=protected,
                          made_by_sdopt=made_by_sdopt) as tmp:
        shutil.copy2(results_dir / RESULTS_NAME, tmp / RESULTS_NAME)
        if (results_dir / PYTEST_BENCHMARK_NAME).is_file():
            shutil.copy2(results_dir / PYTEST_BENCHMARK_NAME, tmp / PYTEST_BENCHMARK_NAME)
        for rel in sorted(paths):
            src = safe_join(results_dir, rel, "results")
            if not src.is_file():
                raise SdoptError(f"results image '{src}' is missing: the results directory is "
                                 "incomplete; re-run 'sdopt bench'")
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        write_history(tmp, with_run(_previous_runs(target) if update else [], results))
    return target


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """sdopt's one way to run git (safe.directory for a repository owned by another user)."""
    return run_git(args, cwd)


def extract_from_git(ref: str, paths: list[str], repo: Path, dest: Path) -> None:
    """Write ``paths`` as committed at ``ref`` into ``dest`` (real git; no checkout, no index)."""
    if not ref or ref.startswith("-"):
        raise SdoptError(f"git ref {ref!r} is not valid: expected a branch, tag or commit")
    _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=repo)
    proc = _git(["archive", "--format=tar", ref, "--", *paths], cwd=repo)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not target.is_relative_to(dest.resolve()) or member.issym() or member.islnk():
                raise SdoptError(f"git ref {ref}: refusing archive entry '{member.name}'")
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else \
            tar.extractall(dest)  # noqa: S202 - members checked above


def parse_git_spec(spec: str) -> tuple[str, str] | None:
    """``git:REF:PATH`` -> (REF, PATH); anything else -> None."""
    if not spec.startswith(GIT_PREFIX):
        return None
    ref, sep, path = spec[len(GIT_PREFIX):].rpartition(":")
    if not sep or not ref or not path:
        raise SdoptError(f"baseline '{spec}': expected git:REF:PATH, e.g. "
                         "git:origin/main:.sdopt/baseline")
    return ref, path


@contextlib.contextmanager
def open_baseline(spec: str | os.PathLike, *, repo: str | os.PathLike = ".") -> Iterator[
        tuple[dict, Path, str]]:
    """Yield (results, directory, source) of a baseline given as a path, an artifact directory
    or ``git:REF:PATH`` (PATH relative to the repository root holding ``repo``)."""
    spec = str(spec)
    git = parse_git_spec(spec)
    if git is None:
        path = Path(spec)
        if path.is_file() and path.name == RESULTS_NAME:
            path = path.parent
        if not path.is_dir():
            raise SdoptError(f"baseline '{path}' not found: save one with 'sdopt baseline save' "
                             "or pass a results directory, an artifact directory or "
                             "git:REF:PATH")
        directory = find_results_dir(path)
        yield read_results(directory, what="baseline"), directory, str(directory)
        return
    ref, rel = git
    root = repo_root(repo)
    with tempfile.TemporaryDirectory(prefix="sdopt-baseline-") as tmp:
        try:
            extract_from_git(ref, [rel], root, Path(tmp))
        except SdoptError as exc:
            raise SdoptError(f"baseline '{spec}' cannot be read from git: {exc}") from None
        directory = Path(tmp) / rel
        if not (directory / RESULTS_NAME).is_file():
            raise SdoptError(f"baseline '{spec}': {rel}/{RESULTS_NAME} is not committed at {ref}")
        yield read_results(directory, what=f"baseline {spec}"), directory, spec


def baseline_spec(config, override: str | None = None) -> str:
    """The baseline to compare with: an explicit one, else the config's (path or git ref)."""
    if override:
        return override
    if config.baseline.git_ref:
        return f"{GIT_PREFIX}{config.baseline.git_ref}:{_repo_relative(config, config.baseline.path)}"
    return str(config.resolve(config.baseline.path))


def _repo_relative(config, path: str) -> str:
    absolute = config.resolve(path).resolve()
    root = repo_root(config.root).resolve()
    if not absolute.is_relative_to(root):
        raise SdoptError(f"baseline.path '{path}' is outside the git repository '{root}': "
                         "baseline.git_ref needs a path inside it")
    return absolute.relative_to(root).as_posix()


def _previous_runs(target: Path) -> list[dict]:
    """The runs of the baseline about to be replaced: its history, or for a baseline saved
    before histories existed, its own run."""
    if (target / HISTORY_NAME).is_file():
        return read_history(target)
    if (target / RESULTS_NAME).is_file():
        return [run_summary(read_results(target, what="baseline"))]
    return []


def inputs_for(baseline: tuple[dict, Path, str], current_dir: str | os.PathLike) -> Inputs:
    results, directory, source = baseline
    current_dir = Path(current_dir)
    if current_dir.is_file():
        current_dir = current_dir.parent
    return Inputs(results, directory, read_results(current_dir, what="current results"),
                  current_dir, source, read_history(directory))
