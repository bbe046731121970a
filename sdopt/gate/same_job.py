"""Same-job mode: the base revision's model and the head's, measured interleaved in one job.

For a PR that changes the model itself, a stored baseline measured on another day says little:
whole runs drift on a shared runner (DESIGN.md section 5: 7 false alarms in 9 runs against a
stored baseline, none when base and head were interleaved in one job). So both sides are built
and timed here, A B A B, and written as a results directory and its baseline.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from ..models import PRESETS
from ..store import atomic_directory
from .baseline import extract_from_git, repo_root
from .bench import BenchSettings, load_original, optimized_subject, run_bench, torch_threads, \
    write_results
from .config import load_config
from .git import run_git
from .outputs import RESULTS_OUTPUT, made_by_sdopt
from .results import IMAGES_DIR


def bench_same_job(config, config_path: str | os.PathLike, base_ref: str,
                   out_dir: str | os.PathLike, *, progress: bool = True, console=None,
                   overwrite: bool = False, protected=()) -> Path:
    """For a PR that changes the model itself: build the base revision's 'optimized' variant (its
    sdopt.toml, model folder and saved model as committed at ``base_ref``) and the working tree's,
    measure both interleaved in this process, and write ``out_dir`` (head, as the current results)
    and ``out_dir/base`` (the baseline). The bench settings (prompts, seeds, size, runs) are the
    head's, so both sides run the same workload."""
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
            if value and not Path(value).is_absolute() and value not in PRESETS:
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
        # Replaced only once both sides are measured: a failed run keeps the old output.
        with atomic_directory(out_dir, overwrite=overwrite, kind=RESULTS_OUTPUT,
                              protected=protected, made_by_sdopt=made_by_sdopt) as work:
            job = uuid.uuid4().hex  # ties the two sides: compare judges them as one job's pair
            results = run_bench([base, head], BenchSettings.from_config(config), work,
                                progress=progress, console=console,
                                config=config.public_dict(), optimization=head_opt)
            for name, target, opt in (("base", work / "base", base_opt), ("head", work, head_opt)):
                doc = dict(results, variants={"optimized": _move_images(
                    results["variants"][name], work / IMAGES_DIR / name, target)}, optimization=opt)
                doc["config"] = dict(doc["config"], same_job={"base_ref": base_ref, "side": name,
                                                              "job": job})
                write_results(doc, target, config_path=cfg_rel, repo=root)
    return out_dir


def _committed(ref: str, rel: str, root: Path) -> bool:
    return run_git(["cat-file", "-e", f"{ref}:{rel}"], cwd=root, check=False).returncode == 0


def _move_images(variant: dict, src: Path, results_dir: Path) -> dict:
    """Move one variant's images to ``results_dir/images/optimized`` and fix their paths."""
    dst = results_dir / IMAGES_DIR / "optimized"
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    images = [dict(rec, path=f"{IMAGES_DIR}/optimized/" + Path(rec["path"]).name)
              for rec in variant["images"]]
    return dict(variant, images=images)
