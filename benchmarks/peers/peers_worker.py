"""One row of the peers benchmark in its own process: prepare it, or load it and time one image.

Every row runs in a fresh process per round so that rows do not share an allocator, thread pools
(ONNX Runtime's spinning workers slow whatever runs next) or memory: all of them at once would not
fit in this machine's RAM. The optimum peers need transformers/huggingface_hub versions that our
.venv cannot hold, so they run under their own interpreter (``benchmarks/peers/setup.sh``); this
file therefore imports nothing from sdopt except in the sdopt rows.

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
    memory = sys.modules.get("sdopt.optimize.memory")
    if memory is not None:  # an sdopt search resets the kernel's mark; sdopt kept the peak
        return memory.process_peak_rss()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _diffusers_pipe(folder: str, dtype=None):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype or torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    return _diffusers_pipe(task["folder"]), {"precision": "fp32"}


def load_deepcache(task):
    from DeepCache import DeepCacheSDHelper

    pipe = _diffusers_pipe(task["folder"])
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
    pipe = _diffusers_pipe(task["folder"], torch.bfloat16)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.unet = torch.compile(pipe.unet, fullgraph=True)
    return pipe, {"precision": "bf16", "settings": {
        "dtype": "bfloat16 (whole pipeline)", "attention": "AttnProcessor2_0 (SDPA)",
        "compile": "torch.compile(unet, fullgraph=True), inductor freezing=True",
        "compile_happens_in": "the warm-up generation"}}


def load_optimum_openvino(task):
    from optimum.intel import OVStableDiffusionPipeline

    target = Path(task["work"]) / "optimum-openvino"
    prepare = {}
    if not target.exists():
        def export(tmp):
            OVStableDiffusionPipeline.from_pretrained(task["folder"], export=True,
                                                      compile=False).save_pretrained(tmp)
        prepare["export_s"] = _atomic_export(target, export)
    t0 = time.perf_counter()
    pipe = OVStableDiffusionPipeline.from_pretrained(str(target), compile=False)
    # optimum-intel's documented speed-up: static shapes, then compile.
    pipe.reshape(batch_size=1, height=task["size"], width=task["size"], num_images_per_prompt=1)
    pipe.compile()
    prepare["reshape_compile_s"] = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    info = {"prepare": prepare, "settings": {"static_reshape": True}}
    try:
        compiled = pipe.unet.request
        compiled = getattr(compiled, "get_compiled_model", lambda: compiled)()
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        text = str(hint).lower()  # "<Type: 'bfloat16'>" or "bf16"
        info["precision"] = "bf16" if "bf" in text else "fp32" if "f32" in text or \
            "float32" in text else text
        info["settings"]["inference_precision_hint"] = str(hint)
    except Exception as exc:  # noqa: BLE001 - informative only
        info["settings"]["inference_precision_hint"] = f"unknown ({exc})"
    return pipe, info


def _slow_tokenizer_folder(task) -> str:
    """The model folder with the tokenizer's vocab.json/merges.txt added (symlinks otherwise):
    our folder is written by transformers 5, which saves only tokenizer.json, and optimum's
    transformers 4.x CLIPTokenizer reads the two files."""
    src = Path(task["folder"])
    dst = Path(task["work"]) / "model-slow-tokenizer"
    if dst.exists():
        return str(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in src.iterdir():
        if item.name != "tokenizer":
            (tmp / item.name).symlink_to(item.resolve())
    shutil.copytree(src / "tokenizer", tmp / "tokenizer")
    model = json.loads((src / "tokenizer" / "tokenizer.json").read_text())["model"]
    (tmp / "tokenizer" / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (tmp / "tokenizer" / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    tmp.rename(dst)
    return str(dst)


def load_optimum_onnxruntime(task):
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    target = Path(task["work"]) / "optimum-onnxruntime"
    prepare = {}
    if not target.exists():
        folder = _slow_tokenizer_folder(task)

        def export(tmp):
            ORTStableDiffusionPipeline.from_pretrained(folder, export=True).save_pretrained(tmp)
        prepare["export_s"] = _atomic_export(target, export)
    t0 = time.perf_counter()
    pipe = ORTStableDiffusionPipeline.from_pretrained(str(target))
    prepare["session_s"] = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    return pipe, {"prepare": prepare, "precision": "fp32",
                  "settings": {"provider": "CPUExecutionProvider", "session": "optimum defaults"}}


def _optimize(task, pipe, optimization_time: str):
    import sdopt

    return sdopt.optimize_model(
        pipe, task["prompts"], metric_drop_ths=task["ths"], height=task["search_size"],
        width=task["search_size"], num_inference_steps=task["search_steps"],
        optimization_time=optimization_time, backends=task.get("sdopt_backends") or None,
        ignore_compilers=task.get("sdopt_ignore") or None, show=False)


def _search_summary(result) -> dict:
    return {"selected": result.selected.id, "wall_s": result.wall_s,
            "candidates": [{"id": c.id, "status": c.status, "reason": c.reason,
                            "build_s": c.build_s, "latency_s": c.latency_s,
                            "metric_drop": c.metric_drop, "e2e_latency_s": c.e2e_latency_s,
                            "image_metric_drop": c.image_metric_drop}
                           for c in result.candidates]}


def _prepare_record(target: Path) -> Path:
    return target.with_name(target.name + ".prepare.json")


def _remember_prepare(target: Path, prepare: dict) -> None:
    """The cold preparation's figures, kept next to the saved model: a later run that reuses the
    model reports them (marked with when they were measured) instead of losing them. Only the
    sdopt rows call it, so sdopt's atomic writer is there."""
    from sdopt.store import write_json

    write_json(_prepare_record(target), {**prepare, "prepared_unix": int(time.time())})


def _load_prepared(task, target: Path, prepare: dict):
    """The saved model loaded like a user would, with its preparation figures (this run's, or
    an earlier run's when the model was prepared then)."""
    import sdopt

    prepare = prepare or _earlier_prepare(target)
    t0 = time.perf_counter()
    pipe = sdopt.load_model(target, _diffusers_pipe(task["folder"]))
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
        pipe = _diffusers_pipe(task["folder"])
        t0 = time.perf_counter()
        optimized = _optimize(task, pipe, "constrained")
        prepare["optimize_cold_s"] = time.perf_counter() - t0
        prepare["search"] = _search_summary(optimized.sdopt_result)
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
            pipe = _diffusers_pipe(task["folder"])
            t0 = time.perf_counter()
            optimized = _optimize(dict(task, search_steps=task["steps"]), pipe, "unconstrained")
            prepare["optimize_cold_s"] = time.perf_counter() - t0
            prepare["search"] = _search_summary(optimized.sdopt_result)
            sdopt.save_model(optimized, target)
        else:
            if not Path(source).exists():
                raise RuntimeError(f"no unconstrained search result: {source} is absent (run "
                                   "benchmarks/techniques_e2e.py, or pass --unconstrained-source "
                                   "search: hours at sd15 size)")
            if not constrained.exists():
                raise RuntimeError("the sdopt_constrained row must be prepared first")
            found = json.loads(Path(source).read_text())
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


def _unet_inputs(pipe, size: int):
    import torch

    unet = pipe.unet
    generator = torch.Generator().manual_seed(0)
    latent = size // 8
    channels = unet.config.in_channels
    dim = unet.config.cross_attention_dim
    return (torch.randn(2, channels, latent, latent, generator=generator),
            torch.tensor(500.0),
            torch.randn(2, 77, dim, generator=generator))


def unet_call_s(pipe, size: int, calls: int = 3) -> float:
    """Median seconds of one UNet call at batch 2 (classifier-free guidance) in this pipeline."""
    import torch

    sample, t, ehs = _unet_inputs(pipe, size)
    dtype = pipe.unet.dtype
    sample, ehs = sample.to(dtype), ehs.to(dtype)
    times = []
    with torch.inference_mode():
        pipe.unet(sample, t, encoder_hidden_states=ehs, return_dict=False)
        for _ in range(calls):
            t0 = time.perf_counter()
            pipe.unet(sample, t, encoder_hidden_states=ehs, return_dict=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unet_flops(pipe, size: int) -> float:
    """FLOPs of one fp32 UNet call at batch 2 (torch's flop counter: convolutions, matmuls,
    attention; elementwise ops are not counted, as is usual)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sample, t, ehs = _unet_inputs(pipe, size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        pipe.unet(sample, t, encoder_hidden_states=ehs, return_dict=False)
    return float(counter.get_total_flops())


def profile_unet(pipe, size: int, top: int = 12) -> dict:
    """Where the chosen UNet's time goes: OpenVINO's per-layer performance counters for an
    OpenVINO UNet, torch.profiler's operator table otherwise."""
    import torch

    base = getattr(pipe.unet, "module", None)
    while hasattr(base, "technique_inner"):  # under step caching / token merging wrappers
        base = base.technique_inner
    sample, t, ehs = _unet_inputs(pipe, size)
    if base is not None and hasattr(base, "ir_dir") and hasattr(base, "hint"):
        import openvino as ov

        from sdopt.backends.base import UNetInputs
        from sdopt.backends.export import unet_args

        core = ov.Core()
        model = core.read_model(str(Path(base.ir_dir) / "unet.xml"))
        arrays = [a.detach().cpu().numpy() for a in unet_args(UNetInputs(sample, t, ehs))]
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
    dtype = pipe.unet.dtype
    with torch.inference_mode():
        pipe.unet(sample.to(dtype), t, encoder_hidden_states=ehs.to(dtype), return_dict=False)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            pipe.unet(sample.to(dtype), t, encoder_hidden_states=ehs.to(dtype),
                      return_dict=False)
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
    result["peak_rss_bytes"] = _rss_peak()
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
