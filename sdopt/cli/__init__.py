"""The ``sdopt`` command. User errors print one line and exit with status 2."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from ..errors import SdoptError

# transformers warns on import about optional image processors a text-to-image run never uses.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEMO_PROMPTS = (
    "a photo of an astronaut riding a horse on mars",
    "a watercolor painting of a city at night",
    "portrait of a cat wearing a hat, studio light",
)


class _Group(click.Group):
    """Turn SdoptError into one line on stderr and exit 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SdoptError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="sdopt")
def main() -> None:
    """Make Stable Diffusion inference fast, and keep it fast."""


def read_prompts(prompts: tuple[str, ...], prompts_file: str | None) -> list[str]:
    """Prompts from --prompt and/or a file: a JSON list of strings, or one prompt per line."""
    out = list(prompts)
    if prompts_file:
        path = Path(prompts_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SdoptError(f"prompts file '{path}' cannot be read: {exc.__class__.__name__}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        if text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SdoptError(f"prompts file '{path}' is not valid JSON: {exc}") from None
            if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
                raise SdoptError(f"prompts file '{path}': expected a JSON list of strings")
            out += [p for p in data if p.strip()]
        else:
            out += [line.strip() for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        if len(out) == len(prompts):
            raise SdoptError(f"prompts file '{path}' holds no prompt: expected one prompt per line "
                             "or a JSON list of strings")
    if not out:
        raise SdoptError("no prompt given: pass --prompt TEXT (repeatable) or --prompts FILE")
    return out


def _run_optimize(pipe, prompts, out: Path, *, overwrite: bool, describe: str, **kwargs) -> None:
    from .. import optimize_model, save_model
    from ..store import write_json

    if out.exists() and not overwrite and (out.is_file() or any(out.iterdir())):
        raise SdoptError(f"--out '{out}' already exists and is not empty: choose another "
                         "directory or pass --overwrite")
    optimized = optimize_model(pipe, prompts, **kwargs)
    saved = save_model(optimized, out, overwrite=overwrite)
    result = optimized.sdopt_result
    write_json(saved / "optimization.json", result.to_dict())
    selected = result.selected
    click.echo(f"\n{describe}: selected {selected.id} "
               f"({result.speedup:.2f}x per UNet call, {result.metric} drop "
               f"{selected.metric_drop:.4g})")
    click.echo(f"saved model:     {saved}  (load with sdopt.load_model('{saved}', pipe=pipe))")
    click.echo(f"search results:  {saved / 'optimization.json'}")


_optimize_options = [
    click.option("--optimization-time", type=click.Choice(["constrained", "unconstrained"]),
                 default="constrained", show_default=True),
    click.option("--metric-drop-ths", type=float, default=None,
                 help="Allowed quality drop (0..1); omit for lossless candidates only."),
    click.option("--metric", default="numeric_precision", show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda"),
    click.option("--backend", "backends", multiple=True, help="Only try these backends."),
    click.option("--ignore-compiler", "ignore_compilers", multiple=True),
    click.option("--height", type=int, default=None),
    click.option("--width", type=int, default=None),
    click.option("--steps", "num_inference_steps", type=int, default=10, show_default=True,
                 help="Denoising steps of the sample runs (timesteps verified)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--repeats", type=int, default=5, show_default=True),
    click.option("--time-budget", "time_budget_s", type=float, default=None,
                 help="Seconds after which remaining candidates are skipped."),
    click.option("--fresh-search", is_flag=True,
                 help="Search again even if the sdopt cache holds this search's decision."),
    click.option("--overwrite", is_flag=True, help="Replace an existing --out directory."),
]


def optimize_options(fn):
    for option in reversed(_optimize_options):
        fn = option(fn)
    return fn


def _search_kwargs(kw: dict) -> dict:
    return dict(
        optimization_time=kw["optimization_time"], metric_drop_ths=kw["metric_drop_ths"],
        metric=kw["metric"], device=kw["device"], backends=list(kw["backends"]) or None,
        ignore_compilers=list(kw["ignore_compilers"]) or None, height=kw["height"],
        width=kw["width"], num_inference_steps=kw["num_inference_steps"], seed=kw["seed"],
        repeats=kw["repeats"], time_budget_s=kw["time_budget_s"],
        reuse_search=False if kw.get("fresh_search") else None)


@main.command()
@click.option("--model", "model_ref", required=True,
              help="Preset name, diffusers folder, .safetensors file or hub id[@revision].")
@click.option("--revision", default=None)
@click.option("--single-file-config", default=None, type=click.Path(file_okay=False),
              help="Diffusers folder with the configs of a .safetensors single-file model.")
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
              help="File with one prompt per line, or a JSON list.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@optimize_options
def optimize(model_ref, revision, single_file_config, prompts, prompts_file, out, overwrite,
             **kw):
    """Optimize a pipeline's UNet and save the result to --out."""
    from ..models import load_pipeline

    prompt_list = read_prompts(prompts, prompts_file)
    pipe = load_pipeline(model_ref, revision, single_file_config=single_file_config)
    _run_optimize(pipe, prompt_list, Path(out), overwrite=overwrite, describe=str(model_ref),
                  **_search_kwargs(kw))


@main.command()
@click.option("--preset", type=click.Choice(["tiny", "sd15"]), default="sd15", show_default=True)
@click.option("--size", type=int, default=256, show_default=True, help="Image side in pixels.")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--metric-drop-ths", type=float, default=0.05, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--steps", type=int, default=4, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--backend", "backends", multiple=True, help="Only try these backends.")
@click.option("--fresh-search", is_flag=True,
              help="Search again even if the sdopt cache holds this search's decision.")
def demo(preset, size, out, metric_drop_ths, device, steps, repeats, backends, fresh_search):
    """Build the offline model, optimize it, print the tables, save the model."""
    from ..models import PRESETS, build_preset

    out_path = Path(out)
    click.echo(f"sdopt demo: building the '{preset}' preset offline "
               f"({PRESETS[preset].description})")
    t0 = time.perf_counter()
    pipe = build_preset(preset)
    click.echo(f"built in {time.perf_counter() - t0:.1f} s; optimizing at {size}x{size} px "
               f"with metric_drop_ths={metric_drop_ths} (previous demo output is replaced)")
    _run_optimize(pipe, list(DEMO_PROMPTS), out_path, overwrite=True,
                  describe=f"demo ({preset}, {size} px)", metric_drop_ths=metric_drop_ths,
                  device=device, height=size, width=size, num_inference_steps=steps,
                  repeats=repeats, backends=list(backends) or None,
                  reuse_search=False if fresh_search else None)


@main.command()
@click.option("--device", default="auto", show_default=True)
def backends(device):
    """List every backend variant and whether it can run on this machine."""
    from rich.markup import escape
    from rich.table import Table

    from ..backends import load_builtin_backends
    from ..device import detect
    from ..optimize.summary import make_console

    dev = detect(device)
    table = Table(title=f"backends on {dev.name} ({dev.kind})", title_justify="left")
    for col in ("candidate", "precision", "lossless", "available", "reason"):
        table.add_column(col)
    for backend in load_builtin_backends().values():
        for variant in backend.variants(dev):
            reason = backend.unavailable_reason(dev, variant)
            table.add_row(variant.id, variant.precision, "yes" if variant.lossless else "no",
                          "[green]yes[/]" if reason is None else "[dim]no[/]", escape(reason or ""))
    make_console().print(table)


@main.group()
def models() -> None:
    """Offline preset models."""


@models.command("list")
def models_list():
    from ..models import PRESETS

    for preset in PRESETS.values():
        click.echo(f"{preset.name:6} {preset.description}")


@models.command("save")
@click.argument("preset")
@click.argument("directory", type=click.Path(file_okay=False))
def models_save(preset, directory):
    """Write a preset as a diffusers folder (usable as --model DIRECTORY)."""
    from ..models import save_preset

    click.echo(f"saved {preset} to {save_preset(preset, directory)}")


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(main)


_register_command_modules()


if __name__ == "__main__":  # pragma: no cover
    main()
