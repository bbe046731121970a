"""``sdopt bench``, ``sdopt baseline save``, ``sdopt compare`` and ``sdopt gate``: the CI gate.

The exit status is the contract CI scripts rely on (sdopt.errors.ExitCode): 0 pass, 1
regression, 2 bad input, 3 not comparable (another machine, another image size). The options
they share with ``sdopt reproduce`` (``--set``, the threshold shortcuts, ``--baseline``...) are
defined once in :mod:`sdopt.cli.options`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from ..errors import SdoptError
from ..gate.config import BENCH_VARIANTS
from ..gate.results import (IMAGES_DIR, NOT_COMPARABLE, PYTEST_BENCHMARK_NAME, REPORT_HTML_NAME,
                            REPORT_MARKDOWN_NAME, RESULTS_NAME, VERDICT_NAME, exit_code, finite,
                            read_results)
from ..store import exists_and_not_empty
from .options import (CommaList, allow_other_machine_option, baseline_option, collect_overrides,
                      config_option, json_option, out_option, overwrite_option, quiet_option,
                      same_job_base_option, set_option, threshold_options)


def pytest_benchmark_storage_option(fn):
    return click.option(
        "--pytest-benchmark-storage", default=None,
        type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
        help="Also add the run to this pytest-benchmark storage (e.g. .benchmarks) as "
             "DIR/<machine>/NNNN_<commit>_<time>.json, where 'pytest-benchmark list' and "
             "'compare' find it.")(fn)


# --- helpers ------------------------------------------------------------------------------------

def _load(path: str, overrides=()):
    from ..gate.config import load_config

    return load_config(path, overrides)


def _check_writable(target: Path, what: str) -> None:
    """Fail before minutes of benchmarking if the output cannot be written."""
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SdoptError(f"{what} '{target}' cannot be created: '{probe}' is a file, not a "
                         "directory")
    try:
        tempfile.TemporaryDirectory(dir=probe).cleanup()
    except OSError as exc:
        raise SdoptError(f"{what} '{target}' is not writable: {exc.strerror or exc} in "
                         f"'{probe}'") from None


def _check_free(target: Path, what: str, overwrite: bool, config_dir) -> list[Path]:
    """Before any work: an existing output needs --overwrite, and even then is replaced only if
    sdopt made it and it is not the repository, the config's folder or HOME (gate.outputs).
    Returns the protected directories, for the replacement itself to check again."""
    from ..gate.outputs import check_output

    if exists_and_not_empty(target) and not overwrite:
        raise SdoptError(f"{what} '{target}' already exists and is not empty: choose another "
                         "directory or pass --overwrite")
    protected = check_output(target, what, config_dir)
    _check_writable(target, what)
    return protected


@contextlib.contextmanager
def _output_errors(target: Path, what: str):
    try:
        yield
    except OSError as exc:
        raise SdoptError(f"{what} '{target}' cannot be written: {exc.strerror or exc}") from None


def _human_output(to_stderr: bool):
    """With --json, stdout carries the verdict only: everything else (tables included) goes to
    stderr."""
    return contextlib.redirect_stdout(sys.stderr) if to_stderr else contextlib.nullcontext()


def _print_json(document: dict) -> None:
    click.echo(json.dumps(finite(document), indent=2))


def _config_source(config_path: str) -> tuple[str, Path]:
    """How the pytest-benchmark export names the config (its path in the repository: the same
    on every checkout and runner, and distinct for two configs of one repository) and the folder
    whose commit it records."""
    from ..gate.config import DEFAULT_CONFIG_NAME
    from ..gate.git import find_repo_root

    path = Path(config_path)
    path = (path / DEFAULT_CONFIG_NAME if path.is_dir() else path).resolve()
    root = find_repo_root(path.parent)
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root.resolve()).as_posix(), path.parent
    return path.name, path.parent


def _bench_into(config, config_path: str, out: Path, *, overwrite: bool, variants=None,
                same_job_base: str | None = None, quiet: bool = False,
                storage: Path | None = None) -> None:
    from ..gate.bench import bench_config, write_results
    from ..gate.outputs import RESULTS_OUTPUT, made_by_sdopt
    from ..store import atomic_directory

    protected = _check_free(out, "--out", overwrite, config.root)
    if storage is not None:
        from ..gate.pytest_benchmark import check_storage

        check_storage(storage)
    with _output_errors(out, "--out"):
        if same_job_base:
            from ..gate.same_job import bench_same_job

            bench_same_job(config, config_path, same_job_base, out, progress=not quiet,
                           overwrite=overwrite, protected=protected)
        else:
            source, repo = _config_source(config_path)
            with atomic_directory(out, overwrite=overwrite, kind=RESULTS_OUTPUT,
                                  protected=protected, made_by_sdopt=made_by_sdopt) as tmp:
                results = bench_config(config, tmp, variants=variants, progress=not quiet)
                write_results(results, tmp, config_path=source, repo=repo)
    if storage is not None:
        _to_storage(out, storage)


def _to_storage(out: Path, storage: Path) -> None:
    """Add this run's pytest-benchmark twin to a pytest-benchmark storage, where
    ``pytest-benchmark list`` and ``compare`` find it with no paths."""
    from ..gate.pytest_benchmark import save_to_storage

    document = json.loads((out / PYTEST_BENCHMARK_NAME).read_text(encoding="utf-8"))
    click.echo(f"pytest-benchmark storage: {save_to_storage(document, storage)}")


def _print_bench(out: Path) -> None:
    results = read_results(out)
    for name, v in results["variants"].items():
        lat = v["latency_s"]
        stages = ", ".join(f"{k} {s * 1e3:.1f} ms" for k, s in v["stages_s"].items())
        click.echo(f"{name:9} {v['label']}: {lat['median'] * 1e3:.1f} ms/image median "
                   f"(IQR {lat['iqr'] * 1e3:.1f} ms, n={len(lat['samples'])}), "
                   f"{v['throughput_images_per_s']:.3g} images/s; {stages}")
    click.echo(f"results: {out / RESULTS_NAME} (+ {PYTEST_BENCHMARK_NAME}, {IMAGES_DIR}/)")


def _compare(baseline_spec: str, current: Path, gate_config, *, clip_model,
             allow_other_machine: bool, repo: Path) -> dict:
    from ..gate.baseline import inputs_for, open_baseline
    from ..gate.compare import compare_results

    with open_baseline(baseline_spec, repo=repo) as base:
        return compare_results(inputs_for(base, current), gate_config,
                               allow_other_machine=allow_other_machine, clip_model=clip_model)


def _report(results_dir: Path, inputs, verdict: dict, out: Path, templates: Path | None,
            history: list[dict] = ()) -> list[str]:
    """Write both reports; a report bug is a note, never a hidden verdict."""
    from ..report import render_reports

    try:
        written = render_reports(inputs.current, results_dir, baseline=inputs.baseline,
                                 baseline_dir=inputs.baseline_dir, verdict=verdict,
                                 html_path=out / REPORT_HTML_NAME,
                                 markdown_path=out / REPORT_MARKDOWN_NAME,
                                 artifact_url=os.environ.get("SDOPT_ARTIFACT_URL") or None,
                                 templates_dir=templates, history=history)
    except SdoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a report bug must not hide the verdict
        first = str(exc).splitlines()[0] if str(exc) else ""
        return [f"report failed: {type(exc).__name__}: {first}"]
    return [f"report: {path}" for path in dict(written).values()]


# --- commands -----------------------------------------------------------------------------------

@click.command()
@config_option
@out_option("Results directory (default: output_dir of the config).")
@click.option("--variants", default=None, type=CommaList(BENCH_VARIANTS),
              help="Variants to measure (default: bench.variants of the config).")
@same_job_base_option
@pytest_benchmark_storage_option
@set_option
@overwrite_option
@quiet_option
def bench(config, out, variants, same_job_base, pytest_benchmark_storage, set, overwrite, quiet):
    """Run the pipeline end to end (fixed seeds, warm-up, interleaved variants) and write
    results.json, results.pytest-benchmark.json and the images."""
    settings = _load(config, collect_overrides(set))
    out_path = Path(out) if out else settings.resolve(settings.output_dir)
    if same_job_base and variants:
        raise SdoptError("--same-job-base measures the base and head 'optimized' variants: "
                         "leave out --variants")
    _bench_into(settings, config, out_path, overwrite=overwrite,
                variants=list(variants) if variants else None, same_job_base=same_job_base,
                quiet=quiet, storage=pytest_benchmark_storage)
    _print_bench(out_path)
    if same_job_base:
        click.echo(f"base ({same_job_base}): {out_path / 'base'}; compare with "
                   f"'sdopt compare {out_path / 'base'} {out_path}'")


@click.group()
def baseline() -> None:
    """Baselines the gate compares against."""


@baseline.command("save")
@config_option
@click.option("--results", required=True, type=click.Path(),
              help="A results directory written by 'sdopt bench' or 'sdopt gate'.")
@click.option("--to", default=None, type=click.Path(file_okay=False),
              help="Baseline directory (default: baseline.path of the config).")
@click.option("--update-baseline", is_flag=True,
              help="Replace an existing baseline (never done without it).")
def baseline_save(config, results, to, update_baseline):
    """Copy results (and their images) to the baseline directory, atomically."""
    from ..gate.baseline import save_baseline
    from ..gate.history import read_history

    settings = _load(config)
    dest = Path(to) if to else settings.resolve(settings.baseline.path)
    if not (dest.exists() and update_baseline):
        _check_writable(dest, "baseline")
    with _output_errors(dest, "baseline"):
        saved = save_baseline(results, dest, update=update_baseline, config_dir=settings.root)
    runs = len(read_history(saved))
    learn = settings.gate.min_history_runs
    click.echo(f"baseline saved: {saved} (history: {runs} run(s) of this machine and workload; "
               + ("the gate judges latency against their spread)" if runs >= learn else
                  f"from {learn} the gate learns their run-to-run spread)"))


@click.command()
@click.argument("baseline_spec", metavar="BASELINE")
@click.argument("current", type=click.Path())
@click.option("--config", default=None, type=click.Path(dir_okay=True),
              help="sdopt.toml with the [gate] settings (default: the built-in thresholds).")
@out_option(f"Directory to write the verdict to, as OUT/{VERDICT_NAME} (it may be CURRENT "
            "itself).")
@set_option
@threshold_options
@allow_other_machine_option
@json_option
@click.option("--overwrite", is_flag=True,
              help=f"Replace an existing {VERDICT_NAME} in --out.")
def compare(baseline_spec, current, config, out, set, latency_tolerance, psnr_min_db, ssim_min,
            allow_other_machine, json, overwrite):
    """Compare CURRENT results with BASELINE (a results directory, a downloaded artifact
    directory or git:REF:PATH). Exit 0 pass, 1 regression, 2 bad input, 3 not comparable."""
    from ..gate.compare import not_comparable_line, summary_text
    from ..gate.config import gate_settings
    from ..store import write_json

    overrides = collect_overrides(set, latency_tolerance=latency_tolerance,
                                  psnr_min_db=psnr_min_db, ssim_min=ssim_min)
    if config:
        settings = _load(config, overrides)
        gate_config, repo = settings.gate, Path(settings.root)
        clip_model = settings.resolve(gate_config.clip_model)
    else:
        gate_config, repo = gate_settings(overrides), Path.cwd()
        clip_model = Path(gate_config.clip_model).expanduser() if gate_config.clip_model else None
    target = None
    if out:
        if Path(out).suffix == ".json":
            raise SdoptError(f"--out '{out}' looks like a file name: --out is a directory, the "
                             f"verdict is written to OUT/{VERDICT_NAME}")
        target = Path(out) / VERDICT_NAME
        if target.exists() and not overwrite:
            raise SdoptError(f"--out '{out}' already holds {VERDICT_NAME}: choose another "
                             "directory or pass --overwrite")
        _check_writable(Path(out), "--out")
    with _human_output(json):
        verdict = _compare(baseline_spec, Path(current), gate_config, clip_model=clip_model,
                           allow_other_machine=allow_other_machine, repo=repo)
        if target is not None:
            with _output_errors(target, "--out"):
                write_json(target, finite(verdict))
        if verdict["verdict"] == NOT_COMPARABLE:
            click.echo(not_comparable_line(verdict, baseline_spec, current), err=True)
        else:
            click.echo(summary_text(verdict))
    if json:
        _print_json(verdict)
    sys.exit(exit_code(verdict))


@click.command()
@config_option
@out_option("Output directory (default: output_dir of the config).")
@baseline_option
@same_job_base_option
@pytest_benchmark_storage_option
@click.option("--history", type=click.Path(path_type=Path), multiple=True,
              help="A results history directory ('sdopt history add') or earlier results "
                   "directories for the report's trend chart (repeatable; read only).")
@set_option
@threshold_options
@allow_other_machine_option
@json_option
@overwrite_option
@quiet_option
def gate(config, out, baseline, same_job_base, pytest_benchmark_storage, history, set,
         latency_tolerance, psnr_min_db, ssim_min, allow_other_machine, json, overwrite, quiet):
    """Optimize (or load the saved model), bench, compare with the baseline, write the
    reports. Exit 0 pass, 1 regression, 2 bad input, 3 not comparable."""
    from ..gate.baseline import baseline_spec, inputs_for, open_baseline
    from ..gate.compare import compare_results, not_comparable_line, summary_text
    from ..report import load_history
    from ..store import write_json

    overrides = collect_overrides(set, latency_tolerance=latency_tolerance,
                                  psnr_min_db=psnr_min_db, ssim_min=ssim_min)
    settings = _load(config, overrides)
    out_path = Path(out) if out else settings.resolve(settings.output_dir)
    _check_free(out_path, "--out", overwrite, settings.root)
    trend = load_history(history)  # before minutes of benchmarking: a bad one fails fast
    repo = Path(settings.root)
    if same_job_base:
        spec = str(out_path / "base")
    else:
        spec = baseline_spec(settings, baseline)
        with open_baseline(spec, repo=repo):  # fail fast, before minutes of benchmarking
            pass
    clip_model = settings.resolve(settings.gate.clip_model)
    templates = settings.resolve(settings.report.templates)
    with _human_output(json):
        _bench_into(settings, config, out_path, overwrite=overwrite,
                    same_job_base=same_job_base, quiet=quiet, storage=pytest_benchmark_storage)
        # Compare and report while the baseline is open: a git baseline's images live in a
        # temporary checkout.
        with open_baseline(spec, repo=repo) as base:
            inputs = inputs_for(base, out_path)
            verdict = compare_results(inputs, settings.gate, clip_model=clip_model,
                                      allow_other_machine=allow_other_machine)
            with _output_errors(out_path, "--out"):
                write_json(out_path / VERDICT_NAME, finite(verdict))
                notes = _report(out_path, inputs, verdict, out_path, templates, trend)
        _print_bench(out_path)
        click.echo(summary_text(verdict))
        for note in notes:
            click.echo(note)
        click.echo(f"verdict: {out_path / VERDICT_NAME}")
        if verdict["verdict"] == NOT_COMPARABLE:
            click.echo(not_comparable_line(verdict, spec, str(out_path)), err=True)
    if json:
        _print_json(verdict)
    sys.exit(exit_code(verdict))


@click.group("history")
def history() -> None:
    """The results history behind the report's trend chart: one file per run, never rewritten,
    at most --max-runs (the oldest go first)."""


@history.command("add")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--to", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The history directory (made on first use; sdopt writes only its own).")
@click.option("--verdict", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help=f"The run's {VERDICT_NAME} (default: RESULTS/{VERDICT_NAME} when there).")
@click.option("--repo", default=".", type=click.Path(file_okay=False, path_type=Path),
              show_default=True,
              help="A folder of the git repository whose checked-out commit the run belongs to.")
@click.option("--max-runs", default=None, type=int,
              help="Keep at most this many runs (default: 500).")
def history_add(results, to, verdict, repo, max_runs):
    """Add the run in RESULTS (a directory written by 'sdopt bench' or 'sdopt gate') to the
    history, with its commit and verdict."""
    from ..gate.results import read_verdict
    from ..gate.results_history import DEFAULT_MAX_RUNS, add_results

    document = read_results(results)
    if verdict is None and Path(results).is_dir() and (Path(results) / VERDICT_NAME).is_file():
        verdict = Path(results) / VERDICT_NAME
    verdict_doc = read_verdict(verdict) if verdict is not None else None
    with _output_errors(to, "--to"):
        path, pruned = add_results(to, document, verdict=verdict_doc, repo=repo,
                                   max_runs=DEFAULT_MAX_RUNS if max_runs is None else max_runs)
    click.echo(f"history: added {path}" + (f" (removed the {len(pruned)} oldest)" if pruned
                                          else ""))


@history.command("show")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--last", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest runs to list.")
def history_show(directory, last):
    """List the newest runs of a history directory, oldest first."""
    from ..gate.results_history import read_runs
    from ..report.fmt import timestamp

    runs = read_runs(directory, last=last)
    if not runs:
        click.echo(f"history '{directory}' holds no runs yet")
    for run in runs:
        commit = run.get("commit") or {}
        medians = "  ".join(f"{name} {value * 1e3:.1f} ms"
                            for name, value in (run.get("medians_s") or {}).items())
        line = (f"{timestamp(run.get('created_unix'))}  {str(commit.get('id'))[:12]:12}  "
                f"{str(commit.get('branch') or '')[:30]:30}  {medians}  "
                f"{run.get('verdict') or '-'}")
        # The files may come from a cache others can write: no terminal control characters.
        click.echo("".join(c if c.isprintable() else "?" for c in line))
