"""One row of the peers benchmark in its own process: prepare it, or load it and time one image.

Every row runs in a fresh process per round so that rows do not share an allocator, thread pools
(ONNX Runtime's spinning workers slow whatever runs next) or memory: all of them at once would not
fit in this machine's RAM. The optimum peers need transformers/huggingface_hub versions that our
.venv cannot hold, so they run under their own interpreter (``benchmarks/peers/setup.sh``); this
file therefore imports nothing from sdopt except in the sdopt rows.

The pipeline classes come from the task (``task["pipeline_class"]``: the diffusers class of
the preset's family, from sdopt.models.FAMILIES, chosen by peers.py); optimum names its classes
after diffusers' with a prefix (``OV``, ``ORT``), so no second table of classes lives here.

Protocol: ``python peers_worker.py '<json task>'``; the result is written as JSON to
``task["out"]``, the image (uint8 HxWx3) to ``task["image"]`` as .npy.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

WARMUP_STEPS = 2  # one short untimed generation: first-call allocations, compiled kernels
MANIFEST = "sdopt_manifest.json"  # sdopt.store.MANIFEST_NAME (no sdopt import in peer venvs)
DEEPCACHE_PARAMS = {"cache_interval": 3, "cache_branch_id": 0}  # DeepCache's README example


def _rss_peak() -> int:
    """The process's peak RSS in bytes since it started (or since :func:`_reset_rss_peak`)."""
    memory = sys.modules.get("sdopt.optimize.memory")
    if memory is not None:  # an sdopt search resets the kernel's mark; sdopt kept the peak
        return memory.process_peak_rss()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_rss_peak() -> bool:
    """Reset the kernel's high-water mark (VmHWM) so that the timed runs get a peak of their own,
    apart from the load's (an export or a search holds far more than a generation). False where
    it cannot be reset: the later peak is then the whole process's, an upper bound."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int:
    """VmHWM in bytes: the peak since the last reset (sdopt's bookkeeping of earlier peaks is
    not wanted here: the caller reset the mark itself)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _diffusers_class(task):
    """The diffusers pipeline class of the preset's family (``task["pipeline_class"]``; older
    tasks without it meant Stable Diffusion 1.x)."""
    import diffusers

    return getattr(diffusers, task.get("pipeline_class") or "StableDiffusionPipeline")


def _optimum_class(module, prefix: str, task):
    """optimum's class for the preset's family: diffusers' class name with optimum's prefix
    (``OVStableDiffusionXLPipeline``); a one-line refusal when that optimum has none."""
    name = prefix + _diffusers_class(task).__name__
    found = getattr(module, name, None)
    if found is None:
        raise RuntimeError(f"{module.__name__} has no {name}: this peer does not support the "
                           f"{task.get('family', '?')} family")
    return found


def _diffusers_pipe(task, dtype=None):
    import torch

    pipe = _diffusers_class(task).from_pretrained(task["folder"],
                                                  torch_dtype=dtype or torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _write_json(path: Path, value: dict) -> None:
    """Atomic JSON write without sdopt (the peer venvs cannot import it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)


def _atomic_export(target: Path, export) -> float:
    """Run ``export(tmp_dir)`` and rename into place; returns its wall time."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    export(tmp)
    seconds = time.perf_counter() - t0
    tmp.rename(target)
    return seconds


# --- rows -------------------------------------------------------------------------------------
# Each loader returns (pipe, info); info["prepare"] holds what was built cold in this process.

def load_fp32_eager(task):
    return _diffusers_pipe(task), {"precision": "fp32"}


def load_deepcache(task):
    from DeepCache import DeepCacheSDHelper

    pipe = _diffusers_pipe(task)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(**DEEPCACHE_PARAMS)
    helper.enable()
    pipe._deepcache_helper = helper  # keep it alive with the pipe
    return pipe, {"precision": "fp32", "settings": DEEPCACHE_PARAMS}


def load_diffusers_recipe(task):
    """diffusers' speed recipe on CPU: bf16 weights, SDPA attention (diffusers' default
    processor on torch 2), torch.compile of the UNet; inductor's weight freezing, which PyTorch
    recommends for CPU inference (without it compile is slower than eager here)."""
    import torch
    import torch._inductor.config as inductor_config
    from diffusers.models.attention_processor import AttnProcessor2_0

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(task["work"]) / "inductor-cache"))
    inductor_config.freezing = True
    pipe = _diffusers_pipe(task, torch.bfloat16)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.unet = torch.compile(pipe.unet, fullgraph=True)
    return pipe, {"precision": "bf16", "settings": {
        "dtype": "bfloat16 (whole pipeline)", "attention": "AttnProcessor2_0 (SDPA)",
        "compile": "torch.compile(unet, fullgraph=True), inductor freezing=True",
        "compile_happens_in": "the warm-up generation"}}


# optimum-intel's export (optimum.exporters.openvino.main_export with ov_config=None, what
# from_pretrained(export=True) passes when neither load_in_8bit nor quantization_config is given)
# compresses the weights of every submodel with >= 1e9 weights to int8_asym (NNCF) and keeps
# the others fp32: its documented default, kept here and written into the row's notes.
OV_EXPORT_OPTIONS = ("from_pretrained(export=True, compile=False) with optimum-intel's defaults "
                     "(no load_in_8bit, no quantization_config: submodels with >= 1e9 weights "
                     "get int8_asym weight compression, the others stay fp32)")
WEIGHT_CONSTANT_MIN = 1024  # elements: smaller constants are shapes, scales and biases


def _ov_weight_types(pipe) -> dict:
    """Per submodel, the share of its weight elements in each element type, as exported: u8/i8
    where optimum-intel compressed the weights to int8, f32 where it kept them."""
    import math

    found = {}
    for name, model in pipe.ov_models.items():
        if model is None or not hasattr(model, "get_ops"):
            continue
        counts: dict[str, int] = {}
        for op in model.get_ops():
            if op.get_type_name() != "Constant":
                continue
            n = math.prod(op.get_output_shape(0))
            if n >= WEIGHT_CONSTANT_MIN:
                kind = op.get_element_type().get_type_name()
                counts[kind] = counts.get(kind, 0) + n
        total = sum(counts.values()) or 1
        found[name] = {"weights": sum(counts.values()),
                       **{k: round(v / total, 4) for k, v in counts.items()}}
    return found


def _count(n: int) -> str:
    """2.6B, 695M, 12K: weights counted the way model cards count them."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.{1 if n < 10 * scale else 0}f}{unit}"
    return str(n)


def _ov_weight_note(weights: dict) -> str:
    """One line: which submodels optimum-intel stored in int8."""
    parts = []
    for name, shares in weights.items():
        int8 = shares.get("u8", 0) + shares.get("i8", 0)
        kind = (f"int8 ({int8:.0%} of weight elements)" if int8 > 0.5 else
                "/".join(k for k in shares if k != "weights"))
        parts.append(f"{name} {_count(shares['weights'])} weights {kind}")
    return "weights as exported: " + ", ".join(parts)


def _export_openvino(task, cls, target: Path) -> dict:
    """The cold export (its time, the process's peak RSS through it, the options and the
    weights' types), remembered next to the export for later runs that reuse it."""
    record = {"export_options": f"{cls.__name__}.{OV_EXPORT_OPTIONS}"}

    def export(tmp):
        pipe = cls.from_pretrained(task["folder"], export=True, compile=False)
        record["weight_types"] = _ov_weight_types(pipe)
        pipe.save_pretrained(tmp)
    record["export_s"] = _atomic_export(target, export)
    record["build_peak_rss_bytes"] = _rss_peak()
    _remember_prepare(target, record)
    return record


def load_optimum_openvino(task):
    """optimum-intel's pipeline for the preset's family (``OV`` + the diffusers class), exported
    once from the same folder, then its documented speed-up: static shapes, then compile."""
    from optimum import intel

    cls = _optimum_class(intel, "OV", task)
    target = Path(task["work"]) / "optimum-openvino"
    prepare = _export_openvino(task, cls, target) if not target.exists() else \
        _earlier_prepare(target)
    t0 = time.perf_counter()
    pipe = cls.from_pretrained(str(target), compile=False)
    pipe.reshape(batch_size=1, height=task["size"], width=task["size"], num_images_per_prompt=1)
    pipe.compile()
    prepare["reshape_compile_s"] = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    precision, hint = _ov_precision(pipe)
    info = {"prepare": prepare, "precision": precision, "settings": {
        "static_reshape": True, "class": cls.__name__, "inference_precision_hint": hint,
        "export_options": prepare.get("export_options")}}
    if prepare.get("weight_types"):
        info["notes"] = [f"export: {prepare['export_options']}",
                         _ov_weight_note(prepare["weight_types"])]
    return pipe, info


def _ov_precision(pipe) -> tuple[str | None, str]:
    """The compiled UNet's inference precision (the CPU plugin picks bf16 where the CPU has it)
    and the plugin's hint as it said it."""
    try:
        compiled = pipe.unet.request
        compiled = getattr(compiled, "get_compiled_model", lambda: compiled)()
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception as exc:  # noqa: BLE001 - informative only
        return None, f"unknown ({exc})"
    text = str(hint).lower()  # "<Type: 'bfloat16'>" or "bf16"
    precision = "bf16" if "bf" in text else "fp32" if "f32" in text or "float32" in text \
        else text
    return precision, str(hint)


def _tokenizer_dirs(folder: Path) -> list[str]:
    """The pipeline's tokenizer folders (SDXL has two: tokenizer and tokenizer_2)."""
    return sorted(d.name for d in folder.iterdir() if (d / "tokenizer.json").is_file())


def _slow_tokenizer_folder(task) -> str:
    """The model folder with each tokenizer's vocab.json/merges.txt added (symlinks otherwise):
    our folder is written by transformers 5, which saves only tokenizer.json, and optimum's
    transformers 4.x CLIPTokenizer reads the two files."""
    src = Path(task["folder"])
    dst = Path(task["work"]) / "model-slow-tokenizer"
    if dst.exists():
        return str(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tokenizers = _tokenizer_dirs(src)
    for item in src.iterdir():
        if item.name not in tokenizers:
            (tmp / item.name).symlink_to(item.resolve())
    for name in tokenizers:
        shutil.copytree(src / name, tmp / name)
        model = json.loads((src / name / "tokenizer.json").read_text())["model"]
        (tmp / name / "vocab.json").write_text(json.dumps(model["vocab"]))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        (tmp / name / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    tmp.rename(dst)
    return str(dst)


def load_optimum_onnxruntime(task):
    """optimum's ONNX Runtime pipeline for the preset's family (``ORT`` + the diffusers class),
    exported once from the same folder, with optimum's session defaults."""
    import optimum.onnxruntime as ort

    cls = _optimum_class(ort, "ORT", task)
    target = Path(task["work"]) / "optimum-onnxruntime"
    if not target.exists():
        folder = _slow_tokenizer_folder(task)
        prepare = {"export_s": _atomic_export(target, lambda tmp: cls.from_pretrained(
            folder, export=True).save_pretrained(tmp)), "build_peak_rss_bytes": _rss_peak()}
        _remember_prepare(target, prepare)
    else:
        prepare = _earlier_prepare(target)
    t0 = time.perf_counter()
    pipe = cls.from_pretrained(str(target))
    prepare["session_s"] = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    return pipe, {"prepare": prepare, "precision": "fp32", "settings": {
        "class": cls.__name__, "provider": "CPUExecutionProvider", "session": "optimum defaults"}}


def _optimize(task, pipe, optimization_time: str):
    import sdopt

    return sdopt.optimize_model(
        pipe, task["prompts"], metric_drop_ths=task["ths"], height=task["search_size"],
        width=task["search_size"], num_inference_steps=task["search_steps"],
        optimization_time=optimization_time, backends=task.get("sdopt_backends") or None,
        ignore_compilers=task.get("sdopt_ignore") or None,
        time_budget_s=task.get("sdopt_time_budget_s"), show=False)


def _search_summary(result) -> dict:
    """The search's table in short, with its peak RSS (sdopt's own span around the search:
    the figure the memory goal is about) and each candidate's."""
    return {"selected": result.selected.id, "wall_s": result.wall_s,
            "peak_rss_bytes": getattr(result, "peak_rss_bytes", None),
            "peak_rss_scope": getattr(result, "peak_rss_scope", None),
            "candidates": [{"id": c.id, "status": c.status, "reason": c.reason,
                            "build_s": c.build_s, "latency_s": c.latency_s,
                            "metric_drop": c.metric_drop, "e2e_latency_s": c.e2e_latency_s,
                            "image_metric_drop": c.image_metric_drop,
                            "peak_rss_bytes": getattr(c, "peak_rss_bytes", None)}
                           for c in result.candidates]}


def _prepare_record(target: Path) -> Path:
    return target.with_name(target.name + ".prepare.json")


def _remember_prepare(target: Path, prepare: dict) -> None:
    """The cold preparation's figures (time, peak RSS, export options), kept next to the saved
    model or export: a later run that reuses it reports them (marked with when they were
    measured) instead of losing them."""
    _write_json(_prepare_record(target), {**prepare, "prepared_unix": int(time.time())})


def _load_prepared(task, target: Path, prepare: dict):
    """The saved model loaded like a user would, with its preparation figures (this run's, or
    an earlier run's when the model was prepared then)."""
    import sdopt

    prepare = prepare or _earlier_prepare(target)
    t0 = time.perf_counter()
    pipe = sdopt.load_model(target, _diffusers_pipe(task))
    prepare["load_model_s"] = time.perf_counter() - t0
    return pipe, {"prepare": prepare, **_sdopt_info(pipe, target)}


def _earlier_prepare(target: Path) -> dict:
    record = _prepare_record(target)
    if not record.exists():
        return {}
    return {**json.loads(record.read_text()), "from_an_earlier_run": True}


def load_sdopt_constrained(task):
    """optimize_model once (cold: an empty export cache; then again with the cache warm), saved
    with save_model; every timed round loads it with load_model like a user would."""
    import sdopt

    target = Path(task["work"]) / "sdopt-constrained"
    prepare = {}
    if not target.exists():
        os.environ["SDOPT_CACHE"] = str(Path(task["work"]) / f"sdopt-cache-{int(time.time())}")
        pipe = _diffusers_pipe(task)
        t0 = time.perf_counter()
        optimized = _optimize(task, pipe, "constrained")
        prepare["optimize_cold_s"] = time.perf_counter() - t0
        prepare["search"] = _search_summary(optimized.sdopt_result)
        prepare["search_peak_rss_bytes"] = prepare["search"]["peak_rss_bytes"]
        print(f"optimize_model cold {prepare['optimize_cold_s']:.0f} s -> "
              f"{optimized.sdopt_result.selected.id}", flush=True)
        sdopt.save_model(optimized, target)  # the cold run's pick is the one benchmarked
        del optimized
        if task.get("optimizer_warm", True):
            t0 = time.perf_counter()
            again = _optimize(task, pipe, "constrained")
            prepare["optimize_warm_s"] = time.perf_counter() - t0
            prepare["warm_selected"] = again.sdopt_result.selected.id
            print(f"optimize_model warm cache {prepare['optimize_warm_s']:.0f} s -> "
                  f"{prepare['warm_selected']}", flush=True)
            del again
        prepare["build_peak_rss_bytes"] = _rss_peak()
        del pipe
        shutil.rmtree(os.environ["SDOPT_CACHE"], ignore_errors=True)
        _remember_prepare(target, prepare)
    return _load_prepared(task, target, prepare)


def load_sdopt_unconstrained(task):
    """The constrained pick plus the approximate techniques the unconstrained search picked.

    ``task["unconstrained_source"]`` is either ``"search"`` (run optimize_model unconstrained
    here: end to end per candidate, very long at sd15 size) or the path of a
    ``techniques_e2e.json`` whose winner (same search code, run_technique_search) is applied on
    top of the saved constrained model."""
    import sdopt

    target = Path(task["work"]) / "sdopt-unconstrained"
    prepare = {}
    if not target.exists():
        source = task["unconstrained_source"]
        constrained = Path(task["work"]) / "sdopt-constrained"
        if source == "search":
            pipe = _diffusers_pipe(task)
            t0 = time.perf_counter()
            optimized = _optimize(dict(task, search_steps=task["steps"]), pipe, "unconstrained")
            prepare["optimize_cold_s"] = time.perf_counter() - t0
            prepare["search"] = _search_summary(optimized.sdopt_result)
            prepare["search_peak_rss_bytes"] = prepare["search"]["peak_rss_bytes"]
            prepare["build_peak_rss_bytes"] = _rss_peak()
            sdopt.save_model(optimized, target)
        else:
            if not Path(source).exists():
                raise RuntimeError(f"no unconstrained search result: {source} is absent (run "
                                   "benchmarks/techniques_e2e.py, or pass --unconstrained-source "
                                   "search: hours at sd15 size)")
            if not constrained.exists():
                raise RuntimeError("the sdopt_constrained row must be prepared first")
            found = json.loads(Path(source).read_text())
            if found.get("preset", task.get("preset")) != task.get("preset"):
                raise RuntimeError(f"{Path(source).name} was searched on preset "
                                   f"{found.get('preset')}, not {task.get('preset')}: run "
                                   "benchmarks/techniques_e2e.py on this preset first")
            specs = found["winner_techniques"]
            prepare["techniques_from"] = {"file": str(source), "winner": found.get(
                "unconstrained_winner"), "searched_on": found.get("constrained_base"),
                "size": found.get("size"), "steps": found.get("steps")}
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for item in constrained.iterdir():
                if item.name != MANIFEST:
                    (tmp / item.name).symlink_to(item.resolve())
            manifest = json.loads((constrained / MANIFEST).read_text())
            # The constrained pick's own (precision) techniques stay unless the winner has them.
            names = {s["name"] for s in specs}
            manifest["techniques"] = list(specs) + [
                s for s in manifest.get("techniques", []) if s["name"] not in names]
            (tmp / MANIFEST).write_text(json.dumps(manifest))
            tmp.rename(target)
        _remember_prepare(target, prepare)
    return _load_prepared(task, target, prepare)


def _sdopt_info(pipe, target: Path) -> dict:
    variant = pipe.unet.variant
    manifest = json.loads((target / MANIFEST).read_text())
    return {"precision": variant.precision, "settings": {
        "variant": variant.id, "techniques": manifest.get("techniques", []),
        "variant_techniques": list(variant.techniques)}}


LOADERS = {
    "fp32_eager": load_fp32_eager,
    "diffusers_recipe": load_diffusers_recipe,
    "optimum_openvino": load_optimum_openvino,
    "optimum_onnxruntime": load_optimum_onnxruntime,
    "deepcache": load_deepcache,
    "sdopt_constrained": load_sdopt_constrained,
    "sdopt_unconstrained": load_sdopt_unconstrained,
}


# --- measurements -----------------------------------------------------------------------------

def generate(pipe, task, steps: int):
    import numpy as np
    import torch

    generator = torch.Generator(device="cpu").manual_seed(task["seed"])
    out = pipe(task["prompt"], height=task["size"], width=task["size"], num_inference_steps=steps,
               guidance_scale=task["guidance_scale"], generator=generator, output_type="np")
    image = np.asarray(out.images[0], dtype=np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _unet_inputs(pipe, size: int, dtype=None):
    """One UNet call's inputs at batch 2 (classifier-free guidance) as the family's pipeline
    makes them (SDXL adds its pooled text embedding and time ids): sdopt's example inputs, so the
    shapes are the ones the search uses. Only the rows in our .venv measure the UNet, so sdopt
    is importable here."""
    from sdopt.backends.base import map_tensors
    from sdopt.optimize.capture import example_inputs

    inputs = example_inputs(pipe, size, size, batch=2)
    if dtype is not None:
        inputs.sample, inputs.encoder_hidden_states, inputs.extra = map_tensors(
            (inputs.sample, inputs.encoder_hidden_states, inputs.extra), lambda t: t.to(dtype))
    return inputs


def _call_unet(pipe, inputs) -> None:
    pipe.unet(inputs.sample, inputs.timestep, encoder_hidden_states=inputs.encoder_hidden_states,
              return_dict=False, **inputs.extra)


def unet_call_s(pipe, size: int, calls: int = 3) -> float:
    """Median seconds of one UNet call at batch 2 (classifier-free guidance) in this pipeline."""
    import torch

    inputs = _unet_inputs(pipe, size, pipe.unet.dtype)
    times = []
    with torch.inference_mode():
        _call_unet(pipe, inputs)
        for _ in range(calls):
            t0 = time.perf_counter()
            _call_unet(pipe, inputs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unet_flops(pipe, size: int) -> float:
    """FLOPs of one fp32 UNet call at batch 2 (torch's flop counter: convolutions, matmuls,
    attention; elementwise ops are not counted, as is usual)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    inputs = _unet_inputs(pipe, size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        _call_unet(pipe, inputs)
    return float(counter.get_total_flops())


def profile_unet(pipe, size: int, top: int = 12) -> dict:
    """Where the chosen UNet's time goes: OpenVINO's per-layer performance counters for an
    OpenVINO UNet, torch.profiler's operator table otherwise."""
    import torch

    base = getattr(pipe.unet, "module", None)
    while hasattr(base, "technique_inner"):  # under step caching / token merging wrappers
        base = base.technique_inner
    inputs = _unet_inputs(pipe, size)
    if base is not None and hasattr(base, "ir_dir") and hasattr(base, "hint"):
        import openvino as ov

        from sdopt.backends.export import unet_args

        core = ov.Core()
        model = core.read_model(str(Path(base.ir_dir) / "unet.xml"))
        arrays = [a.detach().cpu().numpy() for a in unet_args(inputs)]
        names = [p.get_any_name() for p in model.inputs]
        model.reshape({n: list(a.shape) for n, a in zip(names, arrays)})
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": base.hint,
                                                     "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.infer(dict(zip(names, arrays)))
        t0 = time.perf_counter()
        request.infer(dict(zip(names, arrays)))
        wall = time.perf_counter() - t0
        groups: dict[tuple[str, str], list[float]] = {}
        for node in request.get_profiling_info():
            us = node.real_time.total_seconds()
            if us <= 0:
                continue
            g = groups.setdefault((node.node_type, node.exec_type), [0.0, 0])
            g[0] += us
            g[1] += 1
        total = sum(v[0] for v in groups.values()) or 1.0
        rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
        by_precision: dict[str, float] = {}
        for (_, exec_type), (s, _) in groups.items():
            kernel = exec_type.lower()  # e.g. brgconv_avx512_core_I8, jit_avx512_BF16
            key = next((p for p in ("i8", "u8", "bf16", "fp16", "f16", "fp32", "f32")
                        if p in kernel), "other")
            key = {"i8": "int8", "u8": "int8", "fp16": "f16", "fp32": "f32"}.get(key, key)
            by_precision[key] = by_precision.get(key, 0.0) + s / total
        return {"tool": "OpenVINO per-layer performance counters (PERF_COUNT)",
                "call_wall_s": wall, "counted_s": total,
                "share_by_kernel_precision": by_precision,
                "top": [{"op": op, "kernel": kernel, "s": s, "share": s / total, "count": n}
                        for (op, kernel), (s, n) in rows[:top]]}
    inputs = _unet_inputs(pipe, size, pipe.unet.dtype)
    with torch.inference_mode():
        _call_unet(pipe, inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            _call_unet(pipe, inputs)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return {"tool": "torch.profiler (self CPU time)", "counted_s": total / 1e6,
            "top": [{"op": e.key, "kernel": "", "s": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total, "count": e.count}
                    for e in events[:top]]}


def run(task: dict) -> dict:
    import numpy as np
    import torch

    result: dict = {"row": task["row"], "size": task["size"], "mode": task["mode"],
                    "python": sys.executable, "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    pipe, info = LOADERS[task["row"]](task)
    result["load_s"] = time.perf_counter() - t0
    result.update(info)
    # The load's peak (in a prepare run: the export or search too) apart from the runs' peak.
    result["load_peak_rss_bytes"] = _rss_peak()
    result["run_peak_rss_exact"] = _reset_rss_peak()
    with torch.inference_mode():
        t0 = time.perf_counter()
        generate(pipe, task, min(WARMUP_STEPS, task["steps"]))
        result["warmup_s"] = time.perf_counter() - t0
        if task["mode"] == "time":
            latencies = []
            for i in range(task.get("images", 1)):
                t0 = time.perf_counter()
                image = generate(pipe, task, task["steps"])
                latencies.append(time.perf_counter() - t0)
                if i == 0 and task.get("image"):
                    np.save(task["image"], image)
            result["latencies_s"] = latencies
    result["run_peak_rss_bytes"] = _vm_hwm()  # warm-up and timed images, after the load
    result["peak_rss_bytes"] = max(result["load_peak_rss_bytes"], result["run_peak_rss_bytes"])
    extras = task.get("extras", [])
    if "flops" in extras:
        result["unet_flops"] = unet_flops(pipe, task["size"])
    if "unet_call" in extras:
        result["unet_call_s"] = unet_call_s(pipe, task["size"])
    if "profile" in extras:
        try:
            result["profile"] = profile_unet(pipe, task["size"])
        except Exception as exc:  # noqa: BLE001 - the profile is informative, not the result
            result["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def main(argv: list[str]) -> int:
    task = json.loads(argv[0])
    out = Path(task["out"])
    try:
        result = run(task)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the parent records the reason in the table
        traceback.print_exc()
        result = {"row": task["row"], "ok": False,
                  "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400]}"
                  if str(exc).strip() else type(exc).__name__}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
