"""``sdopt optimize``, ``sdopt demo``, ``sdopt backends``, ``sdopt models``: the optimizer.

Options shared by these commands are defined once below, so ``--device`` or ``--steps`` have
one meaning, one choice list and one help text wherever they appear.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import SdoptError
from ..models import PRESETS
from ..optimize.metrics import DEFAULT_AGGREGATE, METRIC_AGGREGATES, METRICS
from .options import out_option, overwrite_option

DEVICES = ("auto", "cpu", "cuda")
DEMO_PROMPTS = (
    "a photo of an astronaut riding a horse on mars",
    "a watercolor painting of a city at night",
    "portrait of a cat wearing a hat, studio light",
)


def _device_option():
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="Device to optimize for; auto picks CUDA when there is a GPU.")


def _metric_drop_option(default: float | None):
    return click.option("--metric-drop-ths", type=float, default=default,
                        show_default=default is not None,
                        help="Allowed quality drop (0..1) under --metric; omit for lossless "
                             "candidates only.")


def _metric_aggregate_option():
    return click.option("--metric-aggregate", type=click.Choice(METRIC_AGGREGATES),
                        default=DEFAULT_AGGREGATE, show_default=True,
                        help="max: every prompt's image within --metric-drop-ths; mean: only "
                             "their average (a better prompt can pay for a worse one).")


def _steps_option(default: int):
    return click.option("--steps", type=click.IntRange(min=1), default=default,
                        show_default=True,
                        help="Denoising steps of the sample runs (the timesteps verified).")


def _repeats_option(default: int):
    return click.option("--repeats", type=click.IntRange(min=1), default=default,
                        show_default=True, help="Timed repetitions per candidate.")


def _backend_option():
    return click.option("--backend", multiple=True,
                        help="Only try this backend (repeatable), e.g. torch_eager, openvino.")


def _exhaustive_option():
    return click.option("--exhaustive", is_flag=True,
                        help="Build every candidate (none skipped by a bound, fixed order, no "
                             "default time budget).")


def _fresh_search_option():
    return click.option("--fresh-search", is_flag=True,
                        help="Search again even if the sdopt cache holds this search's decision.")


OUT_HELP = "Directory for the optimized model and optimization.json."


def read_prompts(prompt: tuple[str, ...], prompts_file: str | None) -> list:
    """Prompts from --prompt and/or a file: a JSON list, or one prompt per line. A JSON item is
    a prompt string or, for image-to-image and inpainting models, an object
    ``{"prompt": ..., "image": PATH, "mask_image": PATH}`` (paths relative to the file)."""
    out: list = list(prompt)
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
            if not isinstance(data, list) or not all(isinstance(p, (str, dict)) for p in data):
                raise SdoptError(f"prompts file '{path}': expected a JSON list of prompt strings "
                                 "or {\"prompt\", \"image\", \"mask_image\"} objects")
            out += [_relative_to(p, path.parent) if isinstance(p, dict) else p
                    for p in data if not isinstance(p, str) or p.strip()]
        else:
            out += [line.strip() for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        if len(out) == len(prompt):
            raise SdoptError(f"prompts file '{path}' holds no prompt: expected one prompt per line "
                             "or a JSON list of strings")
    if not out:
        raise SdoptError("no prompt given: pass --prompt TEXT (repeatable) or --prompts FILE")
    return out


def _relative_to(entry: dict, folder: Path) -> dict:
    """A prompts file's object with its image paths taken relative to the file."""
    return {k: str(folder / v) if k in ("image", "mask_image") and isinstance(v, str) and
            not Path(v).is_absolute() else v for k, v in entry.items()}


def attach_images(entries: list, images: tuple[str, ...], masks: tuple[str, ...]) -> list:
    """--start-image / --mask-image paired with the prompts: one for every prompt, or one per
    prompt in order. Entries become ``{"prompt", "image", "mask_image"}`` objects, which
    optimize_model checks against the pipeline (an image for a text-to-image model is refused
    there)."""
    if not images and not masks:
        return entries
    if masks and not images:
        raise SdoptError("--mask-image given without --start-image: an inpainting mask needs its "
                         "start image")
    for option, values in (("--start-image", images), ("--mask-image", masks)):
        if values and len(values) not in (1, len(entries)):
            raise SdoptError(f"{option} given {len(values)} times for {len(entries)} prompts: "
                             f"expected once (for every prompt) or once per prompt")
    out = []
    for i, entry in enumerate(entries):
        item = dict(entry) if isinstance(entry, dict) else {"prompt": entry}
        for key, values in (("image", images), ("mask_image", masks)):
            if values:
                if item.get(key) is not None:
                    raise SdoptError(f"prompt {i + 1} has an {key} in the prompts file and "
                                     f"from --{'start-image' if key == 'image' else 'mask-image'}"
                                     ": give it once")
                item[key] = values[0] if len(values) == 1 else values[i]
        out.append(item)
    return out


# What OptimizationResult.speedup compares, by what decided the pick.
_SPEEDUP_BASIS = {"unet_latency": "per UNet call", "e2e_latency": "per image, end to end"}


# How that figure was measured (the search's own timings are sequential and drift).
_SPEEDUP_SOURCE = {"paired": ", re-timed side by side with the original",
                   "sequential": ", by the search's sequential timings"}

DEMO_SIZE = 256  # the demo's image side, unless the preset is made for a smaller one

_AGGREGATE_WORDS = {"max": "on every prompt", "mean": "on the mean over prompts"}


def _quality(result) -> str:
    """The pick's drop, mean and worst prompt, by the metric it was judged by (an image metric
    for techniques: their UNet figures are not measured)."""
    s = result.selected
    if s.metric_drop is not None and not s.pipeline_techniques:
        name, mean, worst = result.metric, s.metric_drop, s.metric_drop_max
    else:
        name, mean, worst = result.image_metric, s.image_metric_drop, s.image_metric_drop_max
    if mean is None:
        return "no drop measured"
    text = f"{name} drop {mean:.4g} mean"
    return text + (f", {worst:.4g} worst prompt" if worst is not None else "")


def _run_optimize(pipe, prompts, out: Path, *, overwrite: bool, describe: str, **kwargs) -> None:
    from ..optimize.api import optimize_model, save_model
    from ..store import exists_and_not_empty, write_json

    if exists_and_not_empty(out) and not overwrite:
        raise SdoptError(f"--out '{out}' already exists and is not empty: choose another "
                         "directory or pass --overwrite")
    optimized = optimize_model(pipe, prompts, **kwargs)
    saved = save_model(optimized, out, overwrite=overwrite)
    result = optimized.sdopt_result
    write_json(saved / "optimization.json", result.to_dict())
    selected, basis = result.selected, _SPEEDUP_BASIS[result.selected_by]
    how = _SPEEDUP_SOURCE.get(result.speedup_source, "")
    click.echo(f"\n{describe}: selected {selected.id} ({result.speedup:.2f}x {basis}{how}, "
               f"{_quality(result)})")
    click.echo(f"saved model:     {saved}  (load with sdopt.load_model('{saved}', pipe=pipe))")
    click.echo(f"search results:  {saved / 'optimization.json'}")


@click.command()
@click.option("--model", required=True,
              help="Preset name, diffusers folder, .safetensors file or hub id[@revision].")
@click.option("--revision", default=None, help="Revision (branch, tag or commit) of a hub id.")
@click.option("--single-file-config", default=None, type=click.Path(file_okay=False),
              help="Diffusers folder with the configs of a .safetensors single-file model.")
@click.option("--prompt", multiple=True, help="A prompt to optimize for (repeatable).")
@click.option("--prompts", type=click.Path(dir_okay=False), default=None,
              help="File of prompts: one per line, or a JSON list of strings (or of "
                   "{prompt, image, mask_image} objects for image-to-image and inpainting).")
@click.option("--start-image", multiple=True, type=click.Path(dir_okay=False),
              help="Start image of image-to-image and inpainting models: once for every "
                   "prompt, or once per prompt in order (default: a fixed generated image).")
@click.option("--mask-image", multiple=True, type=click.Path(dir_okay=False),
              help="Inpainting mask (white is repainted), like --start-image (default: the "
                   "centre half).")
@out_option(OUT_HELP, required=True)
@click.option("--optimization-time", type=click.Choice(["constrained", "unconstrained"]),
              default="constrained", show_default=True,
              help="unconstrained also tries pipeline techniques (step caching, fewer steps...).")
@_metric_drop_option(None)
@_metric_aggregate_option()
@click.option("--metric", type=click.Choice(list(METRICS)), default="numeric_precision",
              show_default=True, help="How the quality drop of a candidate is measured.")
@_device_option()
@_backend_option()
@click.option("--ignore-compiler", multiple=True,
              help="Skip this backend (repeatable); Speedster's names are accepted too.")
@click.option("--height", type=click.IntRange(min=8), default=None,
              help="Image height in pixels (default: the pipeline's native size).")
@click.option("--width", type=click.IntRange(min=8), default=None,
              help="Image width in pixels (default: the pipeline's native size).")
@_steps_option(10)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sample runs that record the UNet inputs.")
@_repeats_option(5)
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which the remaining candidates are skipped.")
@_exhaustive_option()
@_fresh_search_option()
@overwrite_option
def optimize(model, revision, single_file_config, prompt, prompts, start_image, mask_image, out,
             optimization_time,
             metric_drop_ths, metric_aggregate, metric, device, backend, ignore_compiler, height,
             width, steps, seed, repeats, time_budget, exhaustive, fresh_search, overwrite):
    """Optimize a pipeline's UNet for the given prompts and save the result to --out."""
    from ..models import load_pipeline

    prompt_list = attach_images(read_prompts(prompt, prompts), start_image, mask_image)
    pipe = load_pipeline(model, revision, single_file_config=single_file_config)
    _run_optimize(pipe, prompt_list, Path(out), overwrite=overwrite, describe=str(model),
                  optimization_time=optimization_time, metric_drop_ths=metric_drop_ths,
                  metric_aggregate=metric_aggregate, metric=metric, device=device,
                  backends=list(backend) or None,
                  ignore_compilers=list(ignore_compiler) or None, height=height, width=width,
                  num_inference_steps=steps, seed=seed, repeats=repeats,
                  time_budget_s=time_budget, exhaustive=exhaustive,
                  reuse_search=False if fresh_search else None)


@click.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), default="sd15", show_default=True,
              help="Offline model to build (random weights, real architecture).")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Image side in pixels (default: 256, or the preset's own size when smaller: "
                   "64 for tiny).")
@out_option(OUT_HELP, default="demo-out", show_default=True)
@_metric_drop_option(0.05)
@_metric_aggregate_option()
@_device_option()
@_steps_option(4)
@_repeats_option(3)
@_backend_option()
@_exhaustive_option()
@_fresh_search_option()
def demo(preset, size, out, metric_drop_ths, metric_aggregate, device, steps, repeats, backend,
         exhaustive, fresh_search):
    """Build the offline model, optimize it, print the tables, save the model (the previous
    demo output is replaced)."""
    from ..models import build_preset

    click.echo(f"sdopt demo: building the '{preset}' preset offline "
               f"({PRESETS[preset].description})")
    t0 = time.perf_counter()
    pipe = build_preset(preset)
    # The tiny preset's VAE downsamples 2x, not 8x: at 256 px its attention runs over 16,384
    # tokens, and ONNX Runtime's static calibration alone took 13.7 GB for one sample.
    size = size or min(DEMO_SIZE, PRESETS[preset].default_size)
    click.echo(f"built in {time.perf_counter() - t0:.1f} s; optimizing at {size}x{size} px "
               f"with metric_drop_ths={metric_drop_ths} "
               f"({_AGGREGATE_WORDS[metric_aggregate]}; previous demo output is replaced)")
    _run_optimize(pipe, list(DEMO_PROMPTS), Path(out), overwrite=True,
                  describe=f"demo ({preset}, {size} px)", metric_drop_ths=metric_drop_ths,
                  metric_aggregate=metric_aggregate,
                  device=device, height=size, width=size, num_inference_steps=steps,
                  repeats=repeats, backends=list(backend) or None, exhaustive=exhaustive,
                  reuse_search=False if fresh_search else None)


@click.command()
@_device_option()
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


@click.group()
def models() -> None:
    """Offline preset models (random weights, real architectures)."""


@models.command("list")
def models_list():
    """List the presets."""
    for preset in PRESETS.values():
        click.echo(f"{preset.name:6} {preset.description}")


@models.command("save")
@click.argument("preset", type=click.Choice(list(PRESETS)))
@click.argument("directory", type=click.Path(file_okay=False))
def models_save(preset, directory):
    """Write PRESET as a diffusers folder DIRECTORY (usable as --model DIRECTORY)."""
    from ..models import save_preset

    click.echo(f"saved {preset} to {save_preset(preset, directory)}")
