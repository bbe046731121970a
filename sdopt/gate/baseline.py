"""Where the gate's reference measurements come from, and how they are kept.

A baseline is an ordinary results directory (results.json, its pytest-benchmark twin, images/).
It can be read from a path, from a git ref of the user's repository (the base branch's committed
baseline: ``git:origin/main:.sdopt/baseline``), or from a CI artifact directory as downloaded
(where results.json may sit one or two folders down). Saving never replaces an existing baseline
unless asked (``--update-baseline``), and goes through a temporary directory and a rename, so a
failed save leaves the old baseline intact.
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

from .bench import PYTEST_BENCHMARK_NAME, RESULTS_NAME, read_results
from .compare import Inputs, safe_join
from ..errors import SdoptError
from ..store import atomic_directory

GIT_PREFIX = "git:"


def save_baseline(results_dir: str | os.PathLike, target: str | os.PathLike, *,
                  update: bool = False) -> Path:
    """Copy a results directory (validated) to ``target`` as the new baseline."""
    results_dir, target = Path(results_dir), Path(target)
    results = read_results(results_dir, what="results")
    if results_dir.is_file():
        results_dir = results_dir.parent
    if target.exists() and not update and (target.is_file() or any(target.iterdir())):
        raise SdoptError(f"baseline '{target}' already exists: pass --update-baseline to replace "
                         "it (the old one is kept otherwise)")
    if target.resolve() == results_dir.resolve():
        raise SdoptError(f"--results '{results_dir}' is the baseline directory itself: nothing "
                         "to save")
    paths = {rec["path"] for v in results["variants"].values() for rec in v.get("images", [])}
    with atomic_directory(target, overwrite=update) as tmp:
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
    return target


def _find_results_dir(path: Path) -> Path:
    """A results directory, or a downloaded artifact with one inside (at most two levels down)."""
    if (path / RESULTS_NAME).is_file():
        return path
    found = sorted(p.parent for p in list(path.glob(f"*/{RESULTS_NAME}"))
                   + list(path.glob(f"*/*/{RESULTS_NAME}")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise SdoptError(f"baseline '{path}' holds no {RESULTS_NAME}: expected a directory written "
                         "by 'sdopt baseline save' or a downloaded sdopt results artifact")
    raise SdoptError(f"baseline '{path}' holds {len(found)} results ({', '.join(map(str, found))}):"
                     " pass the one to use")


def repo_root(start: str | os.PathLike) -> Path:
    proc = _git(["rev-parse", "--show-toplevel"], cwd=Path(start))
    return Path(proc.stdout.decode().strip())


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise SdoptError("reading a baseline from a git ref needs the 'git' command, which is not "
                         "installed") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SdoptError(f"git {' '.join(args)} failed in '{cwd}': {err[-1] if err else 'error'}")
    return proc


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
        directory = _find_results_dir(path)
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


def inputs_for(baseline: tuple[dict, Path, str], current_dir: str | os.PathLike) -> Inputs:
    results, directory, source = baseline
    current_dir = Path(current_dir)
    if current_dir.is_file():
        current_dir = current_dir.parent
    return Inputs(results, directory, read_results(current_dir, what="current results"),
                  current_dir, source)


# --- same-job mode: base revision's model vs head's, measured interleaved ----------------------

def bench_same_job(config, config_path: str | os.PathLike, base_ref: str,
                   out_dir: str | os.PathLike, *, progress: bool = True, console=None) -> Path:
    """For a PR that changes the model itself: build the base revision's 'optimized' variant (its
    sdopt.toml, model folder and saved model as committed at ``base_ref``) and the working tree's,
    measure both interleaved in this process, and write ``out_dir`` (head, as the current results)
    and ``out_dir/base`` (the baseline). The bench settings (prompts, seeds, size, runs) are the
    head's, so both sides run the same workload."""
    from .bench import (BenchSettings, load_original, optimized_subject, run_bench,
                        torch_threads, write_results)
    from .config import load_config

    root = repo_root(config.root).resolve()
    cfg_rel = Path(config_path).resolve().relative_to(root).as_posix()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="sdopt-base-") as tmp:
        extract_from_git(base_ref, [cfg_rel], root, Path(tmp))
        base_cfg = load_config(Path(tmp) / cfg_rel)
        wanted: list[str] = []
        # Paths the base config names, as committed at base_ref (resolved against the base config's
        # directory inside the repository).
        base_dir_rel = Path(cfg_rel).parent
        for value in (base_cfg.model, base_cfg.optimize.saved_model, base_cfg.single_file_config):
            if value and not Path(value).is_absolute() and value not in _preset_names():
                rel = (base_dir_rel / value).as_posix()
                if _committed(base_ref, rel, root):
                    wanted.append(rel)
        if wanted:
            extract_from_git(base_ref, wanted, root, Path(tmp))
        with torch_threads(config.bench.threads):
            base, base_opt = optimized_subject(base_cfg, load_original(base_cfg),
                                               progress=progress, name="base")
            head, head_opt = optimized_subject(config, load_original(config), progress=progress,
                                               name="head")
        with atomic_directory(out_dir, overwrite=False) as work:
            results = run_bench([base, head], BenchSettings.from_config(config), work,
                                progress=progress, console=console,
                                config=config.public_dict(), optimization=head_opt)
            for name, target, opt in (("base", work / "base", base_opt), ("head", work, head_opt)):
                doc = dict(results, variants={"optimized": _move_images(
                    results["variants"][name], work / "images" / name, target)}, optimization=opt)
                doc["config"] = dict(doc["config"], same_job={"base_ref": base_ref, "side": name})
                write_results(doc, target)
    return out_dir


def _preset_names() -> tuple[str, ...]:
    from ..models import PRESETS

    return tuple(PRESETS)


def _committed(ref: str, rel: str, root: Path) -> bool:
    proc = subprocess.run(["git", "cat-file", "-e", f"{ref}:{rel}"], cwd=root, capture_output=True)
    return proc.returncode == 0


def _move_images(variant: dict, src: Path, results_dir: Path) -> dict:
    """Move one variant's images to ``results_dir/images/optimized`` and fix their paths."""
    dst = results_dir / "images" / "optimized"
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    images = [dict(rec, path="images/optimized/" + Path(rec["path"]).name)
              for rec in variant["images"]]
    return dict(variant, images=images)
