"""``sdopt bench``, ``sdopt baseline save``, ``sdopt compare`` and ``sdopt gate``: the CI gate.

Exit codes are the contract CI scripts rely on: 0 pass, 1 regression, 2 bad input (any
SdoptError), 2 also for a pair that is not comparable (another machine, another image size).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ..errors import SdoptError


def _config(path: str):
    from ..gate.config import load_config

    return load_config(path)


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


def _check_free(target: Path, what: str, overwrite: bool) -> None:
    if target.exists() and not overwrite and (target.is_file() or any(target.iterdir())):
        raise SdoptError(f"{what} '{target}' already exists and is not empty: choose another "
                         "directory or pass --overwrite")
    _check_writable(target, what)


@contextlib.contextmanager
def _output_errors(target: Path, what: str):
    try:
        yield
    except OSError as exc:
        raise SdoptError(f"{what} '{target}' cannot be written: {exc.strerror or exc}") from None


def _variants_option(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in ("original", "optimized"):
            raise SdoptError(f"--variants: unknown variant '{name}': expected a comma-separated "
                             "list of original, optimized")
    if not names:
        raise SdoptError("--variants is empty: expected original, optimized or both")
    return names


def _bench_into(config, config_path: str, out: Path, *, overwrite: bool, variants=None,
                same_job_base: str | None = None, quiet: bool = False) -> None:
    from ..gate.bench import bench_config, write_results
    from ..store import atomic_directory

    _check_free(out, "--out", overwrite)
    with _output_errors(out, "--out"):
        if same_job_base:
            if out.exists() and overwrite:
                shutil.rmtree(out)
            from ..gate.baseline import bench_same_job

            bench_same_job(config, config_path, same_job_base, out, progress=not quiet)
            return
        with atomic_directory(out, overwrite=overwrite) as tmp:
            results = bench_config(config, tmp, variants=variants, progress=not quiet)
            write_results(results, tmp)


def _print_bench(out: Path) -> None:
    from ..gate.bench import read_results

    results = read_results(out)
    for name, v in results["variants"].items():
        lat = v["latency_s"]
        stages = ", ".join(f"{k} {s * 1e3:.1f} ms" for k, s in v["stages_s"].items())
        click.echo(f"{name:9} {v['label']}: {lat['median'] * 1e3:.1f} ms/image median "
                   f"(IQR {lat['iqr'] * 1e3:.1f} ms, n={len(lat['samples'])}), "
                   f"{v['throughput_images_per_s']:.3g} images/s; {stages}")
    click.echo(f"results: {out / 'results.json'} (+ results.pytest-benchmark.json, images/)")


def _compare(baseline_spec: str, current: Path, config, *, force: bool, repo: Path):
    from ..gate.baseline import inputs_for, open_baseline
    from ..gate.compare import compare_results

    with open_baseline(baseline_spec, repo=repo) as base:
        inputs = inputs_for(base, current)
        clip = config.resolve(config.gate.clip_model) if config and config.gate.clip_model \
            else None
        verdict = compare_results(inputs, config.gate if config else None, force=force,
                                  clip_model=clip)
        # Keep a copy of a git/artifact baseline next to the results, for the report's images.
        return verdict, inputs


def _report(results_dir: Path, inputs, verdict: dict, out: Path) -> list[str]:
    """Call the report module if this install has it (it is optional for the gate)."""
    try:
        from ..report import render_reports
    except ImportError as exc:
        return [f"report skipped: sdopt.report is not available ({exc})"]
    baseline_dir = inputs.baseline_dir
    try:
        written = render_reports(inputs.current, results_dir, baseline=inputs.baseline,
                                 baseline_dir=baseline_dir, verdict=verdict,
                                 html_path=out / "report.html", markdown_path=out / "report.md",
                                 artifact_url=os.environ.get("SDOPT_ARTIFACT_URL") or None)
    except SdoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a report bug must not hide the verdict
        return [f"report failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    return [f"report: {path}" for path in dict(written).values()]


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--config", "config_path", default="sdopt.toml", show_default=True,
                  type=click.Path(dir_okay=True), help="The sdopt.toml to read.")
    @click.option("--out", default=None, type=click.Path(file_okay=False),
                  help="Results directory (default: output_dir of the config).")
    @click.option("--variants", default=None, help="Comma-separated: original,optimized.")
    @click.option("--same-job-base", default=None, metavar="GIT_REF",
                  help="Also measure the model as committed at GIT_REF, interleaved; writes it to "
                       "OUT/base as the baseline (for PRs that change the model).")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    def bench(config_path, out, variants, same_job_base, overwrite, quiet):
        """Run the pipeline end to end (fixed seeds, warm-up, interleaved variants) and write
        results.json, results.pytest-benchmark.json and the images."""
        config = _config(config_path)
        out_path = Path(out) if out else config.resolve(config.output_dir)
        if same_job_base and variants:
            raise SdoptError("--same-job-base measures the base and head 'optimized' variants: "
                             "leave out --variants")
        _bench_into(config, config_path, out_path, overwrite=overwrite,
                    variants=_variants_option(variants), same_job_base=same_job_base,
                    quiet=quiet)
        _print_bench(out_path)
        if same_job_base:
            click.echo(f"base ({same_job_base}): {out_path / 'base'}; compare with "
                       f"'sdopt compare {out_path / 'base'} {out_path}'")

    @main.group()
    def baseline() -> None:
        """Baselines the gate compares against."""

    @baseline.command("save")
    @click.option("--config", "config_path", default="sdopt.toml", show_default=True,
                  type=click.Path(dir_okay=True))
    @click.option("--results", "results_dir", required=True, type=click.Path(),
                  help="A results directory written by 'sdopt bench' or 'sdopt gate'.")
    @click.option("--to", "target", default=None, type=click.Path(file_okay=False),
                  help="Baseline directory (default: baseline.path of the config).")
    @click.option("--update-baseline", is_flag=True,
                  help="Replace an existing baseline (never done without it).")
    def baseline_save(config_path, results_dir, target, update_baseline):
        """Copy results (and their images) to the baseline directory, atomically."""
        from ..gate.baseline import save_baseline

        config = _config(config_path)
        dest = Path(target) if target else config.resolve(config.baseline.path)
        if not (dest.exists() and update_baseline):
            _check_writable(dest, "baseline")
        with _output_errors(dest, "baseline"):
            saved = save_baseline(results_dir, dest, update=update_baseline)
        click.echo(f"baseline saved: {saved}")

    @main.command()
    @click.argument("baseline_spec", metavar="BASELINE")
    @click.argument("current", type=click.Path())
    @click.option("--config", "config_path", default=None, type=click.Path(dir_okay=True),
                  help="sdopt.toml with the [gate] thresholds (defaults otherwise).")
    @click.option("--out", "verdict_path", default=None, type=click.Path(dir_okay=False),
                  help="Write the verdict JSON here.")
    @click.option("--force", is_flag=True, help="Compare results from different machines.")
    def compare(baseline_spec, current, config_path, verdict_path, force):
        """Compare CURRENT results with BASELINE (a directory, an artifact directory or
        git:REF:PATH). Exit 0 pass, 1 regression, 2 bad input or not comparable."""
        from ..gate.compare import NOT_COMPARABLE, exit_code, not_comparable_line, summary_text
        from ..store import write_json

        config = _config(config_path) if config_path else None
        if verdict_path:
            _check_writable(Path(verdict_path).parent, "--out")
        repo = Path(config.root) if config else Path.cwd()
        verdict, _ = _compare(baseline_spec, Path(current), config, force=force, repo=repo)
        if verdict_path:
            with _output_errors(Path(verdict_path), "--out"):
                write_json(verdict_path, verdict)
        if verdict["verdict"] == NOT_COMPARABLE:
            click.echo(not_comparable_line(verdict, baseline_spec, current), err=True)
        else:
            click.echo(summary_text(verdict))
        sys.exit(exit_code(verdict))

    @main.command()
    @click.option("--config", "config_path", default="sdopt.toml", show_default=True,
                  type=click.Path(dir_okay=True))
    @click.option("--out", default=None, type=click.Path(file_okay=False),
                  help="Output directory (default: output_dir of the config).")
    @click.option("--baseline", "baseline_override", default=None,
                  help="Baseline to use instead of the config's (path, artifact dir, git:REF:PATH).")
    @click.option("--same-job-base", default=None, metavar="GIT_REF",
                  help="Measure the model committed at GIT_REF in the same job and use it as the "
                       "baseline (for PRs that change the model).")
    @click.option("--force", is_flag=True, help="Compare results from different machines.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    def gate(config_path, out, baseline_override, same_job_base, force, overwrite, quiet):
        """Optimize (or load the saved model), bench, compare with the baseline, write the
        reports. Exit 0 pass, 1 regression, 2 bad input or not comparable."""
        from ..gate.baseline import baseline_spec, open_baseline
        from ..gate.compare import NOT_COMPARABLE, exit_code, not_comparable_line, summary_text
        from ..store import write_json

        config = _config(config_path)
        out_path = Path(out) if out else config.resolve(config.output_dir)
        _check_free(out_path, "--out", overwrite)
        repo = Path(config.root)
        if same_job_base:
            spec = str(out_path / "base")
        else:
            spec = baseline_spec(config, baseline_override)
            with open_baseline(spec, repo=repo):  # fail fast, before minutes of benchmarking
                pass
        _bench_into(config, config_path, out_path, overwrite=overwrite,
                    same_job_base=same_job_base, quiet=quiet)
        verdict, inputs = _compare(spec, out_path, config, force=force, repo=repo)
        with _output_errors(out_path, "--out"):
            write_json(out_path / "verdict.json", verdict)
            if same_job_base or not spec.startswith("git:"):
                notes = _report(out_path, inputs, verdict, out_path)
            else:  # the git baseline's images live in a temporary checkout: report while open
                from ..gate.baseline import inputs_for

                with open_baseline(spec, repo=repo) as base:
                    notes = _report(out_path, inputs_for(base, out_path), verdict, out_path)
        _print_bench(out_path)
        click.echo(summary_text(verdict))
        for note in notes:
            click.echo(note)
        click.echo(f"verdict: {out_path / 'verdict.json'}")
        if verdict["verdict"] == NOT_COMPARABLE:
            click.echo(not_comparable_line(verdict, spec, str(out_path)), err=True)
        sys.exit(exit_code(verdict))
