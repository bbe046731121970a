"""``optimize_model``, ``save_model`` and ``load_model``: Speedster's API for diffusers pipelines.

The signatures and meanings follow Speedster's Stable Diffusion guide, so that its examples run
unchanged: ``input_data`` is a list of prompts, the returned object is used like the pipeline
(``optimized(prompt).images[0]``), ``load_model(path, pipe=pipe)`` puts the saved optimization
back into a pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch

from .. import __version__
from ..backends.base import BACKENDS, UNetInputs, Variant, get_backend
from ..device import DeviceInfo, detect, library_versions
from ..errors import SdoptError
from .metrics import METRICS, Metric, resolve_metric, validate_threshold
from .optimized import OptimizedUNet, optimized_unet_of, with_unet
from .capture import collect_samples
from .search import (REFERENCE_ID, STATUS_OK, STATUS_SELECTED, CandidateResult,
                     OptimizationResult, plan_candidates, run_search, run_technique_search,
                     set_e2e_speedup)
from ..store import (MANIFEST_NAME, MANIFEST_SCHEMA_VERSION, atomic_directory, directory_size,
                    read_manifest, write_json)

log = logging.getLogger(__name__)

OPTIMIZATION_TIMES = ("constrained", "unconstrained")


def config_hash(unet) -> str:
    """Architecture identity of a UNet: its config without diffusers' private bookkeeping."""
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_hash(module: torch.nn.Module) -> str:
    """Identity of the weights, so a saved model can tell which pipeline it was made from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_pipe(model, what: str = "model"):
    if optimized_unet_of(model) is not None:
        raise SdoptError(f"{what} already holds an sdopt-optimized UNet: pass the original pipeline")
    unet = getattr(model, "unet", None)
    if not isinstance(unet, torch.nn.Module) or not callable(model):
        raise SdoptError(f"{what} is a {type(model).__name__}: expected a diffusers Stable "
                         "Diffusion pipeline (an object with a .unet, called with a prompt)")
    return unet


def _check_prompts(input_data) -> list[str]:
    if isinstance(input_data, str):
        input_data = [input_data]
    if not isinstance(input_data, (list, tuple)):
        raise SdoptError(f"input_data is a {type(input_data).__name__}: expected a list of prompts")
    if not input_data:
        raise SdoptError("input_data is empty: expected a list of at least one prompt")
    for i, prompt in enumerate(input_data):
        if not isinstance(prompt, str) or not prompt.strip():
            raise SdoptError(f"input_data[{i}] is {prompt!r}: expected a non-empty prompt string")
    return list(input_data)


def optimize_model(
    model,
    input_data: Sequence[str],
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
):
    """Try every backend and precision that fits the device; return the pipeline with the
    fastest UNet whose metric drop stays within ``metric_drop_ths``.

    ``metric_drop_ths=None`` allows only lossless candidates (fp32 arithmetic); the default metric
    is ``numeric_precision`` (see :mod:`sdopt.metrics`). ``num_inference_steps`` only sets how
    many timesteps are sampled for verification; latency is per UNet call at the given
    ``height``/``width`` (default: the pipeline's native size). The search table is available as
    ``optimized.sdopt_result``.

    ``optimization_time="unconstrained"`` also tries the approximate techniques of
    :mod:`sdopt.techniques` (step caching, token merging, fewer DPM-Solver++ steps, bf16 VAE
    decoder) on the original and on the best backend, and picks the fastest candidate *per image,
    end to end*, whose image metric drop (``image_metric``, default ``"psnr"``, or ``metric`` when
    that is an image metric) stays within ``metric_drop_ths``. ``end_to_end`` (default: on) also
    times the original and the chosen pipelines per image and scores their images; with an image
    ``metric`` every backend is judged on images, so it cannot be turned off then.

    ``reuse_search`` (default on; ``SDOPT_REUSE_SEARCH=0`` turns the default off): the decision
    and the chosen model are kept in the sdopt cache, keyed by everything that could change them
    (weights of all three models, prompts, sizes, steps, candidates, thresholds, metrics, device,
    library versions). The same call on the same machine then loads the chosen model instead of
    searching again (seconds instead of minutes, and the same pick, not a noisier re-roll); the
    table is the one measured then, with a note saying so. User-callable metrics are never reused.
    """
    started = time.perf_counter()
    unet = _check_pipe(model)
    prompts = _check_prompts(input_data)
    ths = validate_threshold(metric_drop_ths)
    chosen_metric = resolve_metric(metric)
    gate_image_metric = chosen_metric if chosen_metric.kind == "image" \
        else resolve_metric(image_metric)
    if gate_image_metric.kind != "image":
        raise SdoptError(f"image_metric '{gate_image_metric.name}' compares UNet outputs: expected "
                         "one of psnr, ssim, clip_cosine, clip_score or "
                         "sdopt.optimize.metrics.image_metric(fn)")
    if end_to_end is None:
        end_to_end = True
    if not end_to_end and (chosen_metric.kind == "image" or optimization_time == "unconstrained"):
        raise SdoptError("end_to_end=False: image metrics and optimization_time='unconstrained' "
                         "judge whole pipelines end to end; leave end_to_end on")
    if optimization_time not in OPTIMIZATION_TIMES:
        raise SdoptError(f"optimization_time '{optimization_time}' is not known: expected "
                         f"{' or '.join(OPTIMIZATION_TIMES)}")
    if config_file is not None:
        raise SdoptError("config_file is not supported by sdopt: pass the options as arguments "
                         "(or use sdopt.toml with the CLI)")
    if dynamic_info is not None:
        warnings.warn("sdopt: dynamic_info is ignored; shapes come from running the pipeline at "
                      "height x width", stacklevel=2)
    dev: DeviceInfo = detect(device)
    for name, value in (("num_inference_steps", num_inference_steps), ("n_verify", n_verify),
                        ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise SdoptError(f"{name} is {value!r}: expected a positive integer")
    default_side = int(unet.config.sample_size * model.vae_scale_factor)
    height, width = height or default_side, width or default_side
    multiple = 8  # what diffusers' check_inputs demands
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % multiple:
            raise SdoptError(f"{name} is {value!r}: expected a positive multiple of {multiple} "
                             "(diffusers requires it)")
    variants = plan_candidates(dev, backends=backends, ignore_compilers=ignore_compilers,
                               ignore_compressors=ignore_compressors)
    if reuse_search is None:
        reuse_search = os.environ.get("SDOPT_REUSE_SEARCH", "1").strip().lower() not in (
            "0", "false", "no", "off")
    # A user callable has no identity the cache could key on: its search is never reused.
    builtin_metrics = all(m.name in METRICS and METRICS[m.name] is m
                          for m in (chosen_metric, gate_image_metric))

    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, quiet=not show)
    model.to(dev.torch_device)
    source_hash = weights_hash(unet)
    decision = None
    if reuse_search and builtin_metrics:
        decision = _decision_parts(
            model, source_hash, prompts=prompts, height=height, width=width,
            steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
            n_verify=n_verify, repeats=repeats, time_budget_s=time_budget_s,
            variants=[v.id for v in variants], metric=chosen_metric.name,
            image_metric=gate_image_metric.name, metric_drop_ths=ths,
            optimization_time=optimization_time, end_to_end=end_to_end, device=dev)
        reused = _reuse_decision(model, decision, dev, started)
        if reused is not None:
            if show:
                from .summary import print_summary

                print_summary(reused.sdopt_result)
            if store_latencies:
                write_json(Path.cwd() / "sdopt_latencies.json", reused.sdopt_result.to_dict())
            return reused
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=False, disable=not show)
    with progress:
        task = progress.add_task("capturing UNet inputs (original pipeline)", total=len(prompts))
        samples = collect_samples(
            model, prompts, height=height, width=width, steps=num_inference_steps,
            guidance_scale=guidance_scale, seed=seed, n_verify=n_verify,
            progress=lambda: progress.advance(task))
        e2e = None
        if end_to_end:
            e2e = _end_to_end(model, prompts, height, width, num_inference_steps, guidance_scale,
                              seed, gate_image_metric)
            etask = progress.add_task("original pipeline end to end", total=1)
            e2e.run_reference(model)
            progress.advance(etask)
        ctask = progress.add_task("candidates", total=len(variants))

        def on_candidate(variant: Variant, phase: str) -> None:
            if phase == "start":
                progress.update(ctask, description=f"candidate {variant.id}")
            else:
                progress.advance(ctask)

        def evaluate(module, row: CandidateResult, specs=()) -> None:
            if row.id == REFERENCE_ID and not specs:
                run = e2e.reference
            else:
                run = e2e.run(_assemble(model, module, list(specs), dev))
            _fill_row(row, run, e2e, gate_image_metric)

        result, module = run_search(
            unet, samples, dev, variants, metric=chosen_metric, metric_drop_ths=ths,
            optimization_time=optimization_time, repeats=repeats, time_budget_s=time_budget_s,
            on_candidate=on_candidate,
            evaluate=evaluate if chosen_metric.kind == "image" else None)
        progress.update(ctask, description="candidates done")
        specs: list[dict] = []
        if module is not None and e2e is not None:
            result.image_metric = gate_image_metric.name
            result.end_to_end = {"prompts": len(prompts), "steps": num_inference_steps,
                                 "height": height, "width": width, "seed": seed,
                                 "metrics": [m.name for m in e2e.metrics]}
            result.notes.extend(e2e_notes(e2e))
            for row in (result.original, result.selected):
                if row is not None and row.e2e_latency_s is None:
                    evaluate(module if row is result.selected else _reference_module(unet, dev),
                             row)
            for row in result.candidates:
                set_e2e_speedup(row, result.original)
        # Unconstrained: every technique; constrained: the lower-precision ones on the pick.
        if module is not None and e2e is not None:
            constrained = optimization_time == "constrained"
            ttask = progress.add_task(
                "component precision (end to end)" if constrained else "techniques (end to end)",
                total=None)

            def on_technique(candidate_id: str, phase: str) -> None:
                if phase == "start":
                    progress.update(ttask, description=f"technique {candidate_id}")
                else:
                    progress.advance(ttask)

            if constrained:
                bases = [(result.selected, module)]
            else:
                bases = [(result.original, _reference_module(unet, dev))]
                if result.selected is not result.original:
                    bases.append((result.selected, module))
            winner = run_technique_search(
                result, bases, dev, metric_drop_ths=metric_drop_ths,
                image_metric=gate_image_metric.name,
                evaluate=lambda base, sp, row: evaluate(base, row, sp),
                time_budget_s=time_budget_s, started=started, on_candidate=on_technique,
                constrained=constrained)
            progress.update(ttask, description="techniques done")
            if not constrained or (winner is not None and winner[1]):
                result.selected_by = "e2e_latency"
            if winner is not None and winner[0] is not result.selected:
                row, specs = winner
                base = next(m for r, m in bases if r.id == row.id.split("+")[0])
                module = base
                if result.selected is not None:
                    result.selected.status = STATUS_OK
                row.status = STATUS_SELECTED
                result.selected = row
            del bases
    result.wall_s = time.perf_counter() - started
    if module is None:  # the reference always completes, or run_search raised
        raise SdoptError("no candidate completed")
    sel = result.selected
    info = {"source_hash": source_hash, "config_hash": config_hash(unet),
            "samples": result.samples, "metric": result.metric,
            "metric_drop": sel.metric_drop, "latency_s": sel.latency_s,
            "speedup": result.speedup, "techniques": [dict(s) for s in specs],
            "e2e_latency_s": sel.e2e_latency_s, "image_metric": result.image_metric,
            "image_metric_drop": sel.image_metric_drop, "image_metrics": sel.image_metrics}
    optimized = _assemble(model, module, specs, dev, info=info)
    optimized.sdopt_result = result
    if decision is not None:
        _remember_decision(decision, optimized, result)
    if show:
        from .summary import print_summary

        print_summary(result)
    if store_latencies:
        write_json(Path.cwd() / "sdopt_latencies.json", result.to_dict())
    return optimized


SEARCH_CACHE_KIND = "search"
# Bumped when the same inputs can lead to another pick (a new phase, a new rule), so that an
# older decision is not reused. 2: the constrained search tries the bf16 VAE decoder.
SEARCH_VERSION = 2


def _decision_parts(model, source_hash: str, *, device: DeviceInfo, **settings) -> dict[str, Any]:
    """Everything that can change what a search picks (the cache key of its decision)."""
    from .metrics import clip_model_path, clip_unavailable_reason

    scheduler = {k: v for k, v in dict(model.scheduler.config).items() if not k.startswith("_")}
    clip = clip_model_path() if clip_unavailable_reason() is None else None
    return {"unet": source_hash, "unet_config": config_hash(model.unet),
            "vae": weights_hash(model.vae), "text_encoder": weights_hash(model.text_encoder),
            "scheduler": [type(model.scheduler).__name__,
                          json.dumps(scheduler, sort_keys=True, default=str)],
            "clip_model": clip and str(Path(clip).resolve()),
            "settings": settings, "device": device.fingerprint(), "libraries": library_versions(),
            "sdopt": __version__, "search_version": SEARCH_VERSION}


def _reuse_decision(model, parts: dict[str, Any], dev: DeviceInfo, started: float):
    """The pipeline a previous identical search chose, loaded from the cache; None on a miss or
    when the entry cannot be loaded any more (then the search runs, and replaces it)."""
    from ..cache import peek
    from .search import OptimizationResult

    entry = peek(SEARCH_CACHE_KIND, parts)
    if entry is None:
        return None
    try:
        result = OptimizationResult.from_dict(
            json.loads((entry.path / "result.json").read_text(encoding="utf-8")))
        # Into a new pipeline sharing the user's components: the user's stays untouched.
        optimized = load_model(entry.path / "model", pipe=with_unet(model, model.unet),
                               device=dev.kind)
    except (OSError, ValueError, KeyError, SdoptError) as exc:
        log.warning("sdopt: the cached search %s cannot be reused (%s); searching again",
                    entry.key[:12], exc)
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.meta.get("created_unix", 0)))
    result.notes.insert(0, f"reused the search of {when} from the sdopt cache (entry "
                           f"{entry.key[:12]}; its table is what was measured then): pass "
                           "reuse_search=False (CLI: --fresh-search) to search again")
    result.wall_s = time.perf_counter() - started
    optimized.sdopt_result = result
    return optimized


def _remember_decision(parts: dict[str, Any], optimized, result) -> None:
    """Keep the decision and the chosen model; a cache that cannot be written costs only the
    reuse, never the optimization."""
    from ..cache import fetch_or_build

    def build(tmp: Path) -> dict:
        save_model(optimized, tmp / "model")
        write_json(tmp / "result.json", result.to_dict())
        return {"selected": result.selected.id if result.selected else None}

    try:
        fetch_or_build(SEARCH_CACHE_KIND, parts, build)
    except (OSError, SdoptError) as exc:
        log.warning("sdopt: the search could not be kept in the cache (%s)", exc)


def _end_to_end(model, prompts, height, width, steps, guidance_scale, seed, gate: Metric):
    from .endtoend import EndToEnd
    from .metrics import METRICS, clip_unavailable_reason

    metrics = [METRICS["psnr"], METRICS["ssim"]]
    if clip_unavailable_reason() is None:
        metrics += [METRICS["clip_cosine"], METRICS["clip_score"]]
    if gate.name not in {m.name for m in metrics}:
        metrics.append(gate)
    return EndToEnd(list(prompts), height, width, steps, guidance_scale, seed, metrics=metrics)


def e2e_notes(e2e) -> list[str]:
    from .metrics import clip_unavailable_reason

    reason = clip_unavailable_reason()
    return [f"CLIP metrics skipped: {reason}"] if reason else []


def _fill_row(row: CandidateResult, run, e2e, gate: Metric) -> None:
    row.e2e_latency_s = run.median_s
    row.e2e_latency_samples_s = list(run.latencies_s)
    row.image_metrics = e2e.score(run)
    row.image_metric_drop = row.image_metrics[gate.name]["mean"]
    row.image_metric_drop_max = row.image_metrics[gate.name]["max"]


def _reference_module(unet, dev: DeviceInfo):
    """The original UNet as a module (no copy): the base techniques are tried on alone."""
    from ..backends._torch import TorchUNetModule

    variant = next(v for v in get_backend("torch_eager").variants(dev) if v.id == REFERENCE_ID)
    return TorchUNetModule(unet, variant, unet.dtype)


def _assemble(model, module, specs: list[dict], dev: DeviceInfo, info: dict | None = None):
    """A new pipeline (sharing the user's components) running ``module`` with the techniques of
    ``specs``; the user's pipeline and the backend module stay unchanged."""
    from ..techniques import apply_pipeline_techniques, apply_unet_techniques

    module = apply_unet_techniques(module, specs, model.unet) if specs else module
    wrapped = OptimizedUNet(module, model.unet.config, dtype=model.unet.dtype,
                            device=torch.device(dev.torch_device), info=info or {})
    pipe = with_unet(model, wrapped)
    if specs:
        apply_pipeline_techniques(pipe, specs)
    return pipe


def example_inputs(model, height: int | None = None, width: int | None = None,
                   batch: int = 2) -> UNetInputs:
    """UNet inputs of the shapes the pipeline makes at height x width (CFG doubles the batch),
    for backends that need an example to export or convert."""
    from ..backends.base import UNetInputs

    unet = model.unet
    side = int(unet.config.sample_size * model.vae_scale_factor)
    h, w = (height or side) // model.vae_scale_factor, (width or side) // model.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    text_len = getattr(getattr(model, "tokenizer", None), "model_max_length", 77)
    return UNetInputs(
        sample=torch.randn(batch, unet.config.in_channels, h, w, generator=generator),
        timestep=torch.tensor(999),
        encoder_hidden_states=torch.randn(batch, text_len, unet.config.cross_attention_dim,
                                          generator=generator))


def apply_variant(model, variant_id: str, device: str | None = None, *,
                  height: int | None = None, width: int | None = None):
    """Build one named candidate (e.g. ``"torch_eager/bf16"``) without searching or verifying:
    for when the choice is already known. Returns a new pipeline like ``optimize_model``."""
    from ..backends.base import BuildContext

    unet = _check_pipe(model)
    dev = detect(device)
    backend_name, _, variant_name = str(variant_id).partition("/")
    backend = get_backend(backend_name)
    variant = next((v for v in backend.variants(dev) if v.name == variant_name), None)
    if variant is None:
        raise SdoptError(f"unknown candidate '{variant_id}': expected one of " + ", ".join(
            f"{backend.name}/{v.name}" for v in backend.variants(dev)))
    reason = backend.unavailable_reason(dev, variant)
    if reason:
        raise SdoptError(f"candidate '{variant_id}' cannot run here: {reason}")
    model.to(dev.torch_device)
    with torch.inference_mode():
        example = example_inputs(model, height, width).to(dev.torch_device)
        module = backend.build(unet, variant, BuildContext(device=dev, example=example)).eval()
    info = {"source_hash": weights_hash(unet), "config_hash": config_hash(unet)}
    return with_unet(model, OptimizedUNet(module, unet.config, dtype=unet.dtype,
                                          device=torch.device(dev.torch_device), info=info))


def save_model(model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the optimization (manifest + artifacts in safe formats) atomically to ``path``."""
    wrapped = optimized_unet_of(model)
    if wrapped is None:
        raise SdoptError(f"save_model got a {type(model).__name__} without an sdopt-optimized "
                         "UNet: pass the object optimize_model or load_model returned")
    variant = wrapped.variant
    backend = BACKENDS[variant.backend]
    target = Path(path)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        (tmp / "unet").mkdir()
        from ..techniques import base_module

        artifact = backend.save(base_module(wrapped.module), tmp / "unet")
        result: OptimizationResult | None = getattr(model, "sdopt_result", None)
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "sdopt_version": __version__,
            "created_unix": int(time.time()),
            "pipeline_class": type(model).__name__,
            "components": {"unet": {
                "backend": variant.backend, "backend_version": backend.version,
                "variant": variant.name, "precision": variant.precision,
                "options": dict(variant.options), "techniques": list(variant.techniques),
                "path": "unet", "artifact": artifact,
                "source_hash": wrapped.info.get("source_hash", ""),
                "config_hash": wrapped.info.get("config_hash", ""),
                "dtype": str(wrapped.dtype).replace("torch.", ""),
            }},
            "shapes": wrapped.info.get("samples", {}),
            # Approximate techniques on top of the backend (re-applied by load_model).
            "techniques": list(wrapped.info.get("techniques", [])),
            "metrics": {k: wrapped.info.get(k) for k in (
                "metric", "metric_drop", "latency_s", "speedup", "e2e_latency_s",
                "image_metric", "image_metric_drop", "image_metrics")},
            "device": detect(wrapped.device.type).fingerprint(),
            "libraries": library_versions(),
            "search": result.to_dict() if result else None,
        }
        write_json(tmp / MANIFEST_NAME, manifest)
        manifest["size_bytes"] = directory_size(tmp)
        write_json(tmp / MANIFEST_NAME, manifest)
    return target


def _variant_from(manifest_comp: dict[str, Any], path: Path, device: DeviceInfo) -> Variant:
    try:
        backend = get_backend(manifest_comp["backend"])
    except SdoptError:
        raise SdoptError(f"'{path}': backend '{manifest_comp['backend']}' is not known to this "
                         f"sdopt ({__version__}): re-run optimize_model") from None
    name = backend.name
    if manifest_comp["backend_version"] != backend.version:
        raise SdoptError(
            f"'{path}' was saved by backend {name} format v{manifest_comp['backend_version']}, this "
            f"sdopt ({__version__}) reads v{backend.version}: re-run optimize_model and save again")
    for variant in backend.variants(device):
        if variant.name == manifest_comp["variant"]:
            return variant
    raise SdoptError(f"'{path}': variant '{manifest_comp['variant']}' of backend {name} is not "
                     f"available on {device.kind}: re-run optimize_model on this machine")


def load_model(path: str | os.PathLike, pipe=None, *, device: str | None = None):
    """Put the optimization saved at ``path`` into ``pipe`` (in place) and return the pipeline."""
    path = Path(path)
    manifest = read_manifest(path)
    if pipe is None:
        raise SdoptError("load_model needs pipe=: the diffusers pipeline (original weights) to put "
                         f"the optimized UNet from '{path}' into")
    unet = _check_pipe(pipe, "pipe")
    saved_kind = manifest["device"].get("kind", "cpu")
    dev = detect(device or ("cpu" if saved_kind == "cpu" else None))
    if saved_kind == "cuda" and dev.kind != "cuda":
        raise SdoptError(f"'{path}' was optimized for a CUDA GPU "
                         f"({manifest['device'].get('name')}); this machine has none")
    comp = manifest["components"]["unet"]
    variant = _variant_from(comp, path / MANIFEST_NAME, dev)
    backend = BACKENDS[variant.backend]
    reason = backend.unavailable_reason(dev, variant)
    if reason:
        raise SdoptError(f"'{path}' uses {variant.id}, which cannot run here: {reason}")
    if comp.get("config_hash") and comp["config_hash"] != config_hash(unet):
        raise SdoptError(f"'{path}' was optimized for a different UNet architecture than the "
                         "given pipe's: pass the pipeline it was made from")
    if comp["source_hash"] and comp["source_hash"] != weights_hash(unet):
        log.warning("sdopt: the given pipe's UNet weights differ from those %s was optimized "
                    "from; the saved weights are used", path)
    pipe.to(dev.torch_device)
    from ..techniques import (apply_pipeline_techniques, apply_unet_techniques,
                             unavailable_reason, validate_specs)

    specs = validate_specs(manifest.get("techniques", []), f"'{path / MANIFEST_NAME}'")
    module = backend.load(path / comp.get("path", "unet"), unet, variant,
                          comp.get("artifact", {}), dev)
    module.eval()
    for spec in specs:
        why = unavailable_reason(spec, module, dev)
        if why:
            raise SdoptError(f"'{path}' uses the technique {spec['name']}, which cannot run "
                             f"here: {why}")
    module = apply_unet_techniques(module, specs, unet)
    info = {"source_hash": comp["source_hash"], "config_hash": comp.get("config_hash", ""),
            "samples": manifest.get("shapes", {}), **manifest.get("metrics", {}),
            "techniques": specs}
    pipe.unet = OptimizedUNet(module, unet.config, dtype=unet.dtype,
                              device=torch.device(dev.torch_device), info=info)
    apply_pipeline_techniques(pipe, specs)
    return pipe
