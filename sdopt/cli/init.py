"""``sdopt init``: the gate in a repository in one command (config + the two workflows)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SdoptError


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--model", default=None,
                  help="Preset (tiny, sd15), diffusers folder, .safetensors file or hub id. "
                       "Asked for when omitted on a terminal.")
    @click.option("--dir", "root", default=".", show_default=True,
                  type=click.Path(file_okay=False), help="Repository root to write into.")
    @click.option("--prompt", "prompts", multiple=True,
                  help="Prompt to benchmark (repeatable; default: two sample prompts).")
    @click.option("--steps", default=20, show_default=True, type=int, help="Denoising steps.")
    @click.option("--runs", default=10, show_default=True, type=int,
                  help="Timed repetitions (latency samples).")
    @click.option("--candidate", default=None,
                  help="Build this candidate (e.g. torch_eager/bf16) instead of searching.")
    @click.option("--metric-drop-ths", default=0.05, show_default=True, type=float,
                  help="Quality drop the search may accept.")
    @click.option("--latency-tolerance", default=0.10, show_default=True, type=float,
                  help="Allowed slowdown before a (significant) latency regression.")
    @click.option("--action", "action_ref", default=None,
                  help="The action to use in the workflows (OWNER/REPO@REF).")
    @click.option("--runs-on", default="ubuntu-latest", show_default=True,
                  help="Runner labels of the gate job, comma separated (e.g. self-hosted,linux,gpu).")
    @click.option("--image", default=None,
                  help="Prebuilt sdopt image for the workflows (default: build the Dockerfile).")
    @click.option("--no-workflows", is_flag=True, help="Write only sdopt.toml.")
    @click.option("--force", is_flag=True, help="Overwrite existing files.")
    def init(model, root, prompts, steps, runs, candidate, metric_drop_ths, latency_tolerance,
             action_ref, runs_on, image, no_workflows, force):
        """Write a commented sdopt.toml and the PR gate + fork-safe commenter workflows."""
        from ..gate.scaffold import DEFAULT_ACTION, DEFAULT_PROMPTS, InitOptions, plan, write

        if model is None:
            if not sys.stdin.isatty():
                raise SdoptError("--model is required (no terminal to ask on): e.g. "
                                 "'sdopt init --model runwayml/stable-diffusion-v1-5'")
            model = click.prompt("Model (preset, diffusers folder, .safetensors file or hub id)")
        options = InitOptions(
            model=model, prompts=list(prompts) or list(DEFAULT_PROMPTS), steps=steps, runs=runs,
            candidate=candidate, metric_drop_ths=metric_drop_ths,
            latency_tolerance=latency_tolerance, action=action_ref or DEFAULT_ACTION,
            runs_on=[label.strip() for label in runs_on.split(",") if label.strip()],
            image=image)
        root_path = Path(root)
        if not root_path.is_dir():
            raise SdoptError(f"--dir '{root}' is not a directory: expected your repository root")
        written = write(root_path, plan(options, workflows=not no_workflows), force=force)
        for path in written:
            click.echo(f"wrote {path}")
        click.echo("next: measure and commit a baseline on the machine type CI uses, e.g.\n"
                   "  sdopt bench --config sdopt.toml --out sdopt-out\n"
                   "  sdopt baseline save --config sdopt.toml --results sdopt-out\n"
                   "  git add sdopt.toml .sdopt/baseline .github/workflows")
