"""``optimize_model``, ``save_model`` and ``load_model``: Speedster's API for diffusers pipelines.

The signatures and meanings follow Speedster's Stable Diffusion guide, so that its examples run
unchanged: ``input_data`` is a list of prompts, the returned object is used like the pipeline
(``optimized(prompt).images[0]``), ``load_model(path, pipe=pipe)`` puts the saved optimization
back into a pipeline. The work is elsewhere: argument checks in :mod:`.request`, the search's
stages in :mod:`.runner`, the decision cache in :mod:`.decision_cache`, the saved format in
:mod:`.manifest`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence, Union

import torch

from ..backends.base import BuildContext, get_backend
from ..cpu_threads import fit_torch_threads
from ..device import detect
from ..errors import SdoptError
from ..identity import config_hash, weights_hash
from ..store import atomic_directory, write_json
from ..techniques import (apply_pipeline_techniques, apply_unet_techniques, base_module,
                          stack_reason, technique_of, unavailable_reason, validate_specs)
from . import decision_cache, runner
from .capture import example_inputs
from .inputs import input_image_hashes, takes
from ..models import denoiser_name, denoiser_of
from .manifest import (COMPONENT_DIR, MANIFEST_NAME, build_manifest, denoiser_component,
                       read_manifest, resolve_variant, write_manifest)
from .metrics import Metric
from .optimized import assemble, install, optimized_unet_of
from .request import build_request, check_pipe
from .summary import print_summary

log = logging.getLogger(__name__)

LATENCIES_FILE = "sdopt_latencies.json"


def optimize_model(
    model,
    input_data: Sequence[Union[str, tuple, dict]],
    metric_drop_ths: float | None = None,
    metric: Union[str, Callable, None] = None,
    optimization_time: str = "constrained",
    dynamic_info: dict | None = None,
    config_file: str | None = None,
    ignore_compilers: Sequence[str] | None = None,
    ignore_compressors: Sequence[str] | None = None,
    store_latencies: bool = False,
    device: str | None = None,
    *,
    backends: Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int = 10,
    guidance_scale: float = 7.5,
    seed: int = 0,
    n_verify: int = 8,
    repeats: int = 5,
    time_budget_s: float | None = None,
    show: bool = True,
    console=None,
    image_metric: Union[str, Metric] = "psnr",
    end_to_end: bool | None = None,
    reuse_search: bool | None = None,
    metric_aggregate: str = "max",
    exhaustive: bool = False,
):
    """Try every backend and precision that fits the device; return the pipeline with the
    fastest UNet whose metric drop stays within ``metric_drop_ths``.

    ``input_data`` is a list of prompts. Image-to-image and inpainting pipelines also take
    ``(prompt, image)`` pairs (inpainting: ``(prompt, image, mask_image)``, or a dict with those
    keys); a plain prompt gets a fixed default start image (and mask). Images are PIL images,
    arrays or file paths, brought to ``height`` x ``width`` (default: the first image's size);
    see :mod:`sdopt.optimize.inputs`.

    ``metric_drop_ths=None`` allows only lossless candidates (fp32 arithmetic); the default metric
    is ``numeric_precision`` (see :mod:`sdopt.optimize.metrics`). ``num_inference_steps`` only sets how
    many timesteps are sampled for verification; latency is per UNet call at the given
    ``height``/``width`` (default: the pipeline's native size). The search table is available as
    ``optimized.sdopt_result``.

    ``metric_aggregate``: how the drops of the prompts meet ``metric_drop_ths``. ``"max"`` (the
    default): every prompt's image (or, for the UNet metric, every prompt's held-out UNet calls)
    must be within it, so one bad image fails the candidate; ``"mean"``: only their average must
    (a better prompt can pay for a worse one). The table shows both.

    ``optimization_time="unconstrained"`` also tries the approximate techniques of
    :mod:`sdopt.techniques` (step caching, token merging, fewer DPM-Solver++ steps, bf16 VAE
    decoder) on the original and on the best backend, and picks the fastest candidate *per image,
    end to end*, whose image metric drop (``image_metric``, default ``"psnr"``, or ``metric`` when
    that is an image metric) stays within ``metric_drop_ths``. ``end_to_end`` (default: on) also
    times the original and the chosen pipelines per image and scores their images; with an image
    ``metric`` every backend is judged on images, so it cannot be turned off then.

    The search tries the most promising candidates first and skips those a cheap bound says
    cannot beat the best so far (the reason is in the table); ``time_budget_s`` (default: 240 s
    constrained, 1800 s unconstrained, or 3x / 10x the first stage's run of the original
    pipeline when that is longer) stops it with the best found so far. ``exhaustive=True``
    builds every candidate in a fixed order with no default budget. After the search the pick is
    re-timed side by side with the original (and a runner-up within 15%); the summary's speedup
    is that paired figure, the candidates table keeps the search's sequential ones.

    ``reuse_search`` (default on; ``SDOPT_REUSE_SEARCH=0`` turns the default off): the decision
    and the chosen model are kept in the sdopt cache, keyed by everything that could change them
    (weights of all three models, prompts, sizes, steps, candidates, thresholds, metrics, device,
    library versions). The same call on the same machine then loads the chosen model instead of
    searching again (seconds instead of minutes, and the same pick, not a noisier re-roll); the
    table is the one measured then, with a note saying so. User-callable metrics are never reused.
    """
    started = time.perf_counter()
    request = build_request(
        model, input_data, metric_drop_ths=metric_drop_ths, metric_aggregate=metric_aggregate,
        metric=metric,
        optimization_time=optimization_time, dynamic_info=dynamic_info, config_file=config_file,
        ignore_compilers=ignore_compilers, ignore_compressors=ignore_compressors, device=device,
        backends=backends, height=height, width=width, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, seed=seed, n_verify=n_verify, repeats=repeats,
        time_budget_s=time_budget_s, image_metric=image_metric, end_to_end=end_to_end,
        reuse_search=reuse_search, exhaustive=exhaustive)
    model.to(request.device.torch_device)
    source_hash = weights_hash(denoiser_of(model))
    key = decision_cache.decision_key(model, source_hash, device=request.device,
                                      **request.settings()) if request.reusable else None
    optimized = decision_cache.reuse(model, key, request.device, load_model) if key else None
    searched = optimized is None
    if searched:
        from rich.console import Console

        console = console or Console(stderr=True, quiet=not show)
        with runner.progress_bars(console, show) as progress:
            optimized = runner.run(model, request, progress, source_hash, started=started)
    optimized.sdopt_result.wall_s = time.perf_counter() - started
    # Which start images and masks the pick was judged on (kept by save_model's manifest).
    optimized.sdopt_result.input_images = (input_image_hashes(request.inputs)
                                           if takes(model)[0] else {})
    if searched and key:
        decision_cache.remember(key, optimized, save_model)
    if show:
        print_summary(optimized.sdopt_result)
    if store_latencies:
        write_json(Path.cwd() / LATENCIES_FILE, optimized.sdopt_result.to_dict())
    return optimized


def _runnable(dev, reason: str | None, what: str) -> str | None:
    """``reason`` unless it only says bf16 runs slowly here (DeviceInfo.only_slow): what was
    asked for by name, or saved, still runs, with a warning."""
    if dev.only_slow(reason):
        log.warning("%s runs here, but slower than fp32: %s", what, reason)
        return None
    return reason


def apply_variant(model, variant_id: str, device: str | None = None, *,
                  height: int | None = None, width: int | None = None):
    """Build one named candidate (e.g. ``"torch_eager/bf16"``) without searching or verifying:
    for when the choice is already known. Returns a new pipeline like ``optimize_model``."""
    unet = check_pipe(model)
    dev = detect(device)
    fit_torch_threads()
    backend_name, _, variant_name = str(variant_id).partition("/")
    backend = get_backend(backend_name)
    variant = next((v for v in backend.variants(dev) if v.name == variant_name), None)
    if variant is None:
        raise SdoptError(f"unknown candidate '{variant_id}': expected one of " + ", ".join(
            f"{backend.name}/{v.name}" for v in backend.variants(dev)))
    reason = _runnable(dev, backend.unavailable_reason(dev, variant), f"candidate '{variant_id}'")
    if reason:
        raise SdoptError(f"candidate '{variant_id}' cannot run here: {reason}")
    model.to(dev.torch_device)
    with torch.inference_mode():
        example = example_inputs(model, height, width).to(dev.torch_device)
        module = backend.build(unet, variant, BuildContext(device=dev, example=example)).eval()
    info = {"source_hash": weights_hash(unet), "config_hash": config_hash(unet)}
    return assemble(model, module, [], dev, info=info)


def save_model(model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the optimization (manifest + artifacts in safe formats) atomically to ``path``."""
    wrapped = optimized_unet_of(model)
    if wrapped is None:
        raise SdoptError(f"save_model got a {type(model).__name__} without an sdopt-optimized "
                         "UNet: pass the object optimize_model or load_model returned")
    variant = wrapped.variant
    backend = get_backend(variant.backend)
    target = Path(path)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        (tmp / COMPONENT_DIR).mkdir()
        artifact = backend.save(base_module(wrapped.module), tmp / COMPONENT_DIR)
        result = getattr(model, "sdopt_result", None)
        write_manifest(tmp, build_manifest(
            type(model).__name__, variant, artifact, wrapped.info, wrapped.dtype,
            wrapped.device.type, result.to_dict() if result else None,
            component=denoiser_name(model), denoiser=wrapped))
    return target


def load_model(path: str | os.PathLike, pipe=None, *, device: str | None = None):
    """Put the optimization saved at ``path`` into ``pipe`` (in place) and return the pipeline."""
    path = Path(path)
    manifest = read_manifest(path)
    if pipe is None:
        raise SdoptError("load_model needs pipe=: the diffusers pipeline (original weights) to put "
                         f"the optimized UNet from '{path}' into")
    unet = check_pipe(pipe, "pipe")
    saved_kind = manifest["device"].get("kind", "cpu")
    dev = detect(device or ("cpu" if saved_kind == "cpu" else None))
    fit_torch_threads()
    if saved_kind == "cuda" and dev.kind != "cuda":
        raise SdoptError(f"'{path}' was optimized for a CUDA GPU "
                         f"({manifest['device'].get('name')}); this machine has none")
    comp = denoiser_component(manifest, path / MANIFEST_NAME, denoiser_name(pipe))
    backend, variant = resolve_variant(comp, path / MANIFEST_NAME, dev)
    reason = _runnable(dev, backend.unavailable_reason(dev, variant), f"'{path}' ({variant.id})")
    if reason:
        raise SdoptError(f"'{path}' uses {variant.id}, which cannot run here: {reason}")
    if comp.get("config_hash") and comp["config_hash"] != config_hash(unet):
        raise SdoptError(f"'{path}' was optimized for a different UNet architecture than the "
                         "given pipe's: pass the pipeline it was made from")
    weights_differ = bool(comp["source_hash"]) and comp["source_hash"] != weights_hash(unet)
    if weights_differ:
        log.warning("sdopt: the given pipe's UNet weights differ from those %s was optimized "
                    "from; the saved weights are used", path)
    pipe.to(dev.torch_device)
    specs = validate_specs(manifest.get("techniques", []), f"'{path / MANIFEST_NAME}'")
    module = backend.load(path / comp.get("path", COMPONENT_DIR), unet, variant,
                          comp.get("artifact", {}), dev)
    module.eval()
    for spec in specs:
        why = _runnable(dev, unavailable_reason(spec, module, dev),
                        f"'{path}' (technique {spec['name']})")
        if why:
            raise SdoptError(f"'{path}' uses the technique {spec['name']}, which cannot run "
                             f"here: {why}")
    why = stack_reason(specs, module)
    if why:
        raise SdoptError(f"'{path / MANIFEST_NAME}': techniques: {why}")
    reading = [s["name"] for s in specs if technique_of(s).reads_given_denoiser(module)]
    if weights_differ and reading:
        raise SdoptError(f"'{path}': the given pipe's UNet weights differ from those it was "
                         f"optimized from, and {', '.join(reading)} builds on the given UNet's "
                         "weights here: pass the pipeline it was made from")
    module = apply_unet_techniques(module, specs, unet)
    info = {"source_hash": comp["source_hash"], "config_hash": comp.get("config_hash", ""),
            "samples": manifest.get("shapes", {}), **manifest.get("metrics", {}),
            "techniques": specs}
    install(pipe, module, unet, dev, info)
    apply_pipeline_techniques(pipe, specs)
    return pipe
