"""``sdopt init``: the gate in a repository in one command (config + the two workflows)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SdoptError


# The settings init writes into sdopt.toml: (flag, default, type, help). Steps and runs default
# to what fits the runner's job timeout (sdopt/gate/workload.py).
_SETTINGS = (
    ("--steps", None, int, "Denoising steps of each benchmarked image (bench.steps). Default: "
                           "the most that fit the runner's 60-minute job timeout."),
    ("--runs", None, int, "Timed repetitions, the latency samples (bench.runs). Default: 5 on a "
                          "CPU runner, 10 on a GPU runner."),
    ("--metric-drop-ths", 0.05, float,
     "Quality drop the search may accept (optimize.metric_drop_ths)."),
    ("--latency-tolerance", 0.10, float,
     "Allowed slowdown before a latency regression (gate.latency_tolerance)."),
)


def _setting_options(fn):
    for flag, default, kind, text in reversed(_SETTINGS):
        fn = click.option(flag, default=default, show_default=default is not None, type=kind,
                          help=text)(fn)
    return fn


def _validate(model: str, prompts: list[str], **settings) -> None:
    """Check the values with the config's own rules before anything is written, so init never
    writes an sdopt.toml that then fails to load (``--latency-tolerance nan``); an error names
    the option."""
    from ..gate.config import Override, make_override, parse_config

    keys = {"steps": "bench.steps", "runs": "bench.runs", "candidate": "optimize.candidate",
            "metric_drop_ths": "optimize.metric_drop_ths",
            "latency_tolerance": "gate.latency_tolerance"}
    overrides = [make_override(keys[name], value, source=f"--{name.replace('_', '-')}")
                 for name, value in settings.items() if value is not None]
    if prompts:
        overrides.append(Override("bench.prompts", prompts, "", "--prompt"))
    parse_config({"model": model}, source="sdopt init", overrides=overrides)


@click.command()
@click.option("--model", default=None,
              help="Preset (tiny, sd15), diffusers folder, .safetensors file or hub id. "
                   "Asked for when omitted on a terminal.")
@click.option("--dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Repository root to write into.")
@click.option("--prompt", multiple=True,
              help="Prompt to benchmark (repeatable; default: two sample prompts).")
@_setting_options
@click.option("--candidate", default=None,
              help="Build this candidate (e.g. torch_eager/bf16) instead of searching.")
@click.option("--action", default=None,
              help="The action to use in the workflows (OWNER/REPO@REF).")
@click.option("--runs-on", default="ubuntu-latest", show_default=True,
              help="Runner labels of the gate job, comma separated (e.g. self-hosted,linux,gpu).")
@click.option("--runner-kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True,
              help="What the runner is, for the workload and timeout init writes; auto: gpu when "
                   "a label names one (gpu, cuda, nvidia, t4, l4, a100, h100...).")
@click.option("--image", default=None,
              help="Prebuilt sdopt image for the workflows (default: build the Dockerfile).")
@click.option("--no-workflows", is_flag=True, help="Write only sdopt.toml.")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def init(model, dir, prompt, steps, runs, candidate, metric_drop_ths, latency_tolerance, action,
         runs_on, runner_kind, image, no_workflows, overwrite):
    """Write a commented sdopt.toml and the PR gate + fork-safe commenter workflows."""
    from ..gate.scaffold import DEFAULT_ACTION, DEFAULT_PROMPTS, InitOptions, plan, write

    if model is None:
        if not sys.stdin.isatty():
            raise SdoptError("--model is required (no terminal to ask on): e.g. "
                             "'sdopt init --model runwayml/stable-diffusion-v1-5'")
        model = click.prompt("Model (preset, diffusers folder, .safetensors file or hub id)")
    _validate(model, list(prompt), steps=steps, runs=runs, candidate=candidate,
              metric_drop_ths=metric_drop_ths, latency_tolerance=latency_tolerance)
    options = InitOptions(
        model=model, prompts=list(prompt) or list(DEFAULT_PROMPTS), steps=steps, runs=runs,
        candidate=candidate, metric_drop_ths=metric_drop_ths,
        latency_tolerance=latency_tolerance, action=action or DEFAULT_ACTION,
        runs_on=[label.strip() for label in runs_on.split(",") if label.strip()],
        image=image, runner_kind=runner_kind)
    root = Path(dir)
    if not root.is_dir():
        raise SdoptError(f"--dir '{dir}' is not a directory: expected your repository root")
    written = write(root, plan(options, workflows=not no_workflows), overwrite=overwrite)
    for path in written:
        click.echo(f"wrote {path}")
    workload = options.workload()
    click.echo(f"workload for {workload.kind.upper()} runners ({','.join(options.runs_on)}): "
               f"{f'{workload.size} px, ' if workload.size else ''}{workload.steps} steps, "
               f"{workload.runs} runs; estimated {workload.minutes():.0f} min of the "
               f"{workload.timeout_minutes()}-minute job timeout (see the top of sdopt.toml)")
    click.echo("next: measure and commit a baseline on the machine type CI uses, e.g.\n"
               "  sdopt bench --config sdopt.toml --out sdopt-out\n"
               "  sdopt baseline save --config sdopt.toml --results sdopt-out\n"
               "  git add sdopt.toml .sdopt/baseline .github/workflows")
