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


def _bench_into(config, config_path: str, out: Path, *, overwrite: bool, variants=None,
                same_job_base: str | None = None, quiet: bool = False) -> None:
    from ..gate.bench import bench_config, write_results
    from ..gate.outputs import RESULTS_OUTPUT, made_by_sdopt
    from ..store import atomic_directory

    protected = _check_free(out, "--out", overwrite, config.root)
    with _output_errors(out, "--out"):
        if same_job_base:
            from ..gate.same_job import bench_same_job

            bench_same_job(config, config_path, same_job_base, out, progress=not quiet,
                           overwrite=overwrite, protected=protected)
            return
        with atomic_directory(out, overwrite=overwrite, kind=RESULTS_OUTPUT,
                              protected=protected, made_by_sdopt=made_by_sdopt) as tmp:
            results = bench_config(config, tmp, variants=variants, progress=not quiet)
            write_results(results, tmp)


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


def _report(results_dir: Path, inputs, verdict: dict, out: Path, templates: Path | None
            ) -> list[str]:
    """Write both reports; a report bug is a note, never a hidden verdict."""
    from ..report import render_reports

    try:
        written = render_reports(inputs.current, results_dir, baseline=inputs.baseline,
                                 baseline_dir=inputs.baseline_dir, verdict=verdict,
                                 html_path=out / REPORT_HTML_NAME,
                                 markdown_path=out / REPORT_MARKDOWN_NAME,
                                 artifact_url=os.environ.get("SDOPT_ARTIFACT_URL") or None,
                                 templates_dir=templates)
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
@set_option
@overwrite_option
@quiet_option
def bench(config, out, variants, same_job_base, set, overwrite, quiet):
    """Run the pipeline end to end (fixed seeds, warm-up, interleaved variants) and write
    results.json, results.pytest-benchmark.json and the images."""
    settings = _load(config, collect_overrides(set))
    out_path = Path(out) if out else settings.resolve(settings.output_dir)
    if same_job_base and variants:
        raise SdoptError("--same-job-base measures the base and head 'optimized' variants: "
                         "leave out --variants")
    _bench_into(settings, config, out_path, overwrite=overwrite,
                variants=list(variants) if variants else None, same_job_base=same_job_base,
                quiet=quiet)
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
@set_option
@threshold_options
@allow_other_machine_option
@json_option
@overwrite_option
@quiet_option
def gate(config, out, baseline, same_job_base, set, latency_tolerance, psnr_min_db, ssim_min,
         allow_other_machine, json, overwrite, quiet):
    """Optimize (or load the saved model), bench, compare with the baseline, write the
    reports. Exit 0 pass, 1 regression, 2 bad input, 3 not comparable."""
    from ..gate.baseline import baseline_spec, inputs_for, open_baseline
    from ..gate.compare import compare_results, not_comparable_line, summary_text
    from ..store import write_json

    overrides = collect_overrides(set, latency_tolerance=latency_tolerance,
                                  psnr_min_db=psnr_min_db, ssim_min=ssim_min)
    settings = _load(config, overrides)
    out_path = Path(out) if out else settings.resolve(settings.output_dir)
    _check_free(out_path, "--out", overwrite, settings.root)
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
                    same_job_base=same_job_base, quiet=quiet)
        # Compare and report while the baseline is open: a git baseline's images live in a
        # temporary checkout.
        with open_baseline(spec, repo=repo) as base:
            inputs = inputs_for(base, out_path)
            verdict = compare_results(inputs, settings.gate, clip_model=clip_model,
                                      allow_other_machine=allow_other_machine)
            with _output_errors(out_path, "--out"):
                write_json(out_path / VERDICT_NAME, finite(verdict))
                notes = _report(out_path, inputs, verdict, out_path, templates)
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
