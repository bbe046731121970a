"""sdopt against its GPU peers, end to end per image, side by side in one process (#16).

Rows, each a whole pipeline timed prompt to pixels (SD 1.5 architecture, random weights, batch 1
with classifier-free guidance, the same seed for every row):

- ``fp16_eager``: diffusers in fp16 with its default SDPA attention (the reference of the ratios);
- ``diffusers_recipe``: diffusers' fast-diffusion recipe on fp16: fused QKV projections,
  channels_last UNet and VAE, the recipe's inductor flags, torch.compile max-autotune (with CUDA
  graphs) of the UNet and of the VAE decoder, fullgraph;
- ``deepcache_fp16``: the DeepCache library on the fp16 pipeline (its README's settings);
- ``sdopt_constrained``: ``optimize_model(metric_drop_ths=0.05)`` on the fp32 pipeline, the
  candidates limited by ``--sdopt-backends`` to fit a short GPU lease (said in the JSON); then the
  same call again, which reuses the cached decision: ``optimize_model`` cold and warm (each up to
  its first image, where torch.compile compiles);
- ``sdopt_unconstrained``: ``optimization_time="unconstrained"`` (step caching, token merging,
  fewer steps on top of the backends in ``--unconstrained-backends``), at the same threshold.

``--recipe-no-coordinate-descent`` leaves coordinate-descent tuning out of the recipe (its compile
did not finish in 310 + 265 s on an H200); the row is then named ``diffusers_recipe_no_cd``.

Rows are built first (compiles happen in their warm-up calls), then timed in rounds whose order
rotates, so drift hits every row alike; the ratios are medians of per-round ratios against
``fp16_eager`` in the same round. Every image's PSNR is taken against the fp32 pipeline's image of
the same prompt and seed. Device time is scarce: ``--deadline-s`` bounds the building of rows; after
the cheap rows are built they are measured and written once, and a row still compiling at the
deadline is abandoned (an alarm interrupts its compile) and listed with that reason, so the rows
built are measured and written whatever a compile costs. Each row's log says when its first
denoiser call returned (the UNet's compile, for the compiled rows) and when it was built.

    python benchmarks/gpu_peers.py --out benchmarks/results/gpu/gpu_peers_sd15_512.json
    python benchmarks/gpu_peers.py --device cpu --preset tiny --size 64 --steps 4   # a dry run
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night"]
DEEPCACHE_PARAMS = {"cache_interval": 3, "cache_branch_id": 0}  # DeepCache's README example
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def generate(pipe, prompt: str, args) -> np.ndarray:
    gen = torch.Generator("cpu").manual_seed(args.seed)
    with torch.inference_mode():
        out = pipe(prompt, num_inference_steps=args.steps, generator=gen, height=args.size,
                   width=args.size, output_type="np")
    return np.asarray(out.images[0], dtype=np.float32)


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - img.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def finite(x: float) -> float | None:
    return round(x, 2) if np.isfinite(x) else None


def half_copy(pipe, dtype):
    """A converted copy of the whole pipeline (the fp32 one stays the reference)."""
    return copy.deepcopy(pipe).to(dtype)


CD_FLAGS = ("coordinate_descent_tuning", "coordinate_descent_check_all_directions")


def build_recipe(pipe, device: str, coordinate_descent: bool = True):
    """diffusers' fast-diffusion recipe (docs: tutorials/fast_diffusion) on an fp16 copy."""
    from torch._inductor import list_mode_options

    from sdopt.backends.torch_compile import RECIPE_FLAGS

    pipe.fuse_qkv_projections()
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    flags = {k: v for k, v in RECIPE_FLAGS.items() if coordinate_descent or k not in CD_FLAGS}
    options = {**(list_mode_options("max-autotune") if device == "cuda" else {}), **flags}
    pipe.unet = torch.compile(pipe.unet, options=options, fullgraph=True)
    pipe.vae.decode = torch.compile(pipe.vae.decode, options=options, fullgraph=True)
    return pipe


def build_deepcache(pipe):
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(**DEEPCACHE_PARAMS)
    helper.enable()
    pipe._deepcache_helper = helper
    return pipe


def unet_flops(pipe, args) -> int | None:
    """FLOPs of one UNet call with CFG (batch 2) at the benchmark's size."""
    from sdopt.optimize.ceiling import count_flops

    unet = pipe.unet
    side = args.size // 8
    x = torch.randn(2, unet.config.in_channels, side, side, device=args.device)
    h = torch.randn(2, 77, unet.config.cross_attention_dim, device=args.device)
    t = torch.tensor(500, device=args.device)
    try:
        return count_flops(lambda: unet(x, t, encoder_hidden_states=h))
    except Exception as exc:  # noqa: BLE001 - a count is informative only
        log(f"FLOP count failed: {exc}")
        return None


def measure(rows: dict, args, rounds: int) -> dict:
    """{row: {prompt: [seconds per round]}} and each row's images, rows rotated every round."""
    names = list(rows)
    times = {n: {p: [] for p in PROMPTS[:args.prompts]} for n in names}
    images = {}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for prompt in PROMPTS[:args.prompts]:
                sync(args.device)
                start = time.perf_counter()
                img = generate(rows[name], prompt, args)
                sync(args.device)
                times[name][prompt].append(time.perf_counter() - start)
                images.setdefault(name, {})[prompt] = img
        log(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {statistics.mean(times[n][p][-1] for p in times[n]) * 1e3:.0f} ms" for n in names))
    return {"times": times, "images": images}


def summarise(rows: dict, meas: dict, refs: dict, args, notes: dict, extra: dict) -> dict:
    base = "fp16_eager"
    out = {}
    for name in rows:
        per_round = [statistics.mean(meas["times"][name][p][r] for p in meas["times"][name])
                     for r in range(len(next(iter(meas["times"][name].values()))))]
        base_round = [statistics.mean(meas["times"][base][p][r] for p in meas["times"][base])
                      for r in range(len(per_round))]
        ratios = [b / t for b, t in zip(base_round, per_round)]
        out[name] = {
            "median_s_per_image": statistics.median(per_round),
            "samples_s": per_round,
            "speedup_vs_fp16_eager_paired": statistics.median(ratios),
            "paired_ratios": ratios,
            # None: identical to the fp32 image (infinite PSNR)
            "psnr_db_vs_fp32": {p: finite(psnr(refs[p], meas["images"][name][p])) for p in refs},
        }
        values = [v for v in out[name]["psnr_db_vs_fp32"].values() if v is not None]
        out[name]["psnr_db_worst"] = min(values) if values else None
    return {"benchmark": "gpu_peers", "preset": args.preset, "size": args.size,
            "steps": args.steps, "seed": args.seed, "prompts": PROMPTS[:args.prompts],
            "rows": out, "not_built": notes, **extra,
            "environment": environment(args.device), "unix_time": int(time.time())}


def environment(device: str) -> dict:
    import diffusers

    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "diffusers": diffusers.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return env


def write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
    log(f"wrote {path}")


def round_trip(opt, fp32, args) -> dict:
    """save_model, load_model into a fresh copy of the pipeline, the same image again."""
    import tempfile

    import sdopt

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sdopt.save_model(opt, Path(tmp) / "saved")
        loaded = sdopt.load_model(Path(tmp) / "saved", pipe=copy.deepcopy(fp32))
        loaded.set_progress_bar_config(disable=True)
        again = generate(loaded, PROMPTS[0], args)
        first_s = time.perf_counter() - start
    before = generate(opt, PROMPTS[0], args)
    diff = float(np.abs(before - again).max() * 255)
    log(f"save/load round trip: max pixel difference {diff:.2f} (of 255), first image after "
        f"load {first_s:.1f} s (recompiles)")
    return {"max_abs_pixel_diff": diff, "save_load_first_image_s": first_s}


def backends_of(spec: str, args) -> list[str]:
    """The candidates named on the command line (a CPU dry run: torch bf16 alone)."""
    return ["torch_eager/bf16"] if args.device == "cpu" else [b for b in spec.split(",") if b]


def run_sdopt(fp32, args, backends, show=True, **kwargs):
    """``optimize_model`` on a copy of the fp32 pipeline, at the benchmark's size, steps and
    threshold, with the fixed time budget the cached decision's key holds."""
    import sdopt

    return sdopt.optimize_model(
        copy.deepcopy(fp32), PROMPTS[:args.prompts], metric_drop_ths=0.05, device=args.device,
        height=args.size, width=args.size, num_inference_steps=args.steps, backends=backends,
        show=show, time_budget_s=args.sdopt_budget_s, **kwargs)


def warm_call(fp32, args, backends) -> dict:
    """The constrained call again, on a fresh copy of the pipeline: the cached decision is
    reused and only the pick is built; timed up to its first image (torch.compile compiles on
    the first call, from inductor's on-disk cache this time)."""
    start = time.perf_counter()
    opt = run_sdopt(fp32, args, backends, show=False, reuse_search=True)
    opt.set_progress_bar_config(disable=True)
    returned = time.perf_counter() - start
    generate(opt, PROMPTS[0], args)
    first_image = time.perf_counter() - start
    res = opt.sdopt_result
    out = {"optimize_model_warm_s": returned, "warm_to_first_image_s": first_image,
           "selected": res.selected.id,
           "reused": any("reused the search" in n for n in res.notes)}
    log(f"optimize_model warm: {returned:.1f} s, first image after {first_image:.1f} s "
        f"(reused: {out['reused']}, selected {out['selected']})")
    del opt
    gc_cuda()
    return out


class DeadlinePassed(Exception):
    pass


def deadline_passed(signum, frame):
    raise DeadlinePassed("the run's --deadline-s passed while the row was being built")


class first_call_logged:
    """Logs when the pipeline's first denoising step returns (the scheduler steps right after
    the denoiser's call): for a compiled row, how long its denoiser took to compile."""

    def __init__(self, pipe, name: str, start: float):
        self.scheduler, self.name, self.start = getattr(pipe, "scheduler", None), name, start

    def __enter__(self):
        if self.scheduler is None:
            return self
        step, seen = self.scheduler.step, []

        def logged(*args, **kwargs):
            if not seen:
                seen.append(True)
                log(f"{self.name}: first denoiser call returned after "
                    f"{time.perf_counter() - self.start:.1f} s")
            return step(*args, **kwargs)

        self.scheduler.step = logged
        return self

    def __exit__(self, *exc):
        if self.scheduler is not None and "step" in vars(self.scheduler):
            del self.scheduler.step
        return False


def quiesce_compile_workers() -> None:
    """Ends inductor's compile workers: an abandoned compile's workers otherwise go on using the
    CPU and slow the launch-bound rows measured after it (fp16 eager's image took 1127 ms in the
    first round after an abandoned recipe against 554 ms before it, 2026-12-04)."""
    try:
        from torch._inductor.async_compile import shutdown_compile_workers

        shutdown_compile_workers()
    except Exception as exc:  # noqa: BLE001 - a private API: say so and measure anyway
        log(f"could not end inductor's compile workers: {type(exc).__name__}: {exc}")


def gc_cuda() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--preset", default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="stop building rows after this long; a row still compiling then is "
                        "abandoned (the compiles are the cost)")
    parser.add_argument("--sdopt-backends", default="torch_eager/fp16,torch_eager/fp16-channels_last,"
                        "torch_compile/fp16-cudagraphs,torch_compile/fp16-max-autotune")
    parser.add_argument("--unconstrained-backends",
                        default="torch_eager/fp16,torch_compile/fp16-cudagraphs")
    parser.add_argument("--sdopt-budget-s", type=float, default=240.0,
                        help="time_budget_s of each optimize_model call (fixed: the cached "
                        "decision's key holds it, so the warm call must pass the same)")
    parser.add_argument("--recipe-no-coordinate-descent", action="store_true")
    parser.add_argument("--no-warm", action="store_true",
                        help="leave out the warm optimize_model call (device time)")
    parser.add_argument("--only", default="", help="comma-separated rows to build (default all)")
    parser.add_argument("--out", type=Path, default=Path("gpu_peers.json"))
    args = parser.parse_args(argv)
    args.prompts = min(args.prompts, len(PROMPTS))
    half = torch.float16 if args.device == "cuda" else torch.bfloat16
    only = set(filter(None, args.only.split(",")))
    want = lambda row: not only or row in only  # noqa: E731

    import sdopt

    log(f"building the {args.preset} pipeline (random weights)")
    fp32 = sdopt.build_preset(args.preset).to(args.device)
    fp32.set_progress_bar_config(disable=True)
    refs = {p: generate(fp32, p, args) for p in PROMPTS[:args.prompts]}
    flops = unet_flops(fp32, args)
    from sdopt.optimize.ceiling import gemm_rate

    half_name = "fp16" if half == torch.float16 else "bf16"
    # (a CPU dry run skips it: 8192^3 in bf16 takes minutes on a CPU without bf16 units)
    gemm = gemm_rate(half_name, args.device) if args.device == "cuda" else None
    rows, notes, extra = {}, {}, {"unet_gflop_per_call": flops / 1e9 if flops else None,
                                  "build_s": {},
                                  f"{half_name}_gemm_tflop_per_s": gemm / 1e12 if gemm else None}
    log(f"{half_name} GEMM (8192^3 on CUDA): {gemm / 1e12 if gemm else float('nan'):.0f} TFLOP/s")

    def partial(label: str):
        """Every row built so far, measured and written: a later step cut by the timeout
        still leaves this."""
        if len(rows) > 1:
            meas = measure(rows, args, rounds=2)
            write(args.out, summarise(rows, meas, refs, args, notes,
                                      {**extra, "partial": True, "partial_after": label}))

    def build(name, make):
        left = args.deadline_s - (time.perf_counter() - T0)
        if left <= 0:
            notes[name] = f"not built: the run's deadline ({args.deadline_s:.0f} s) had passed"
            log(notes[name])
            return
        log(f"building {name}")
        start = time.perf_counter()
        signal.signal(signal.SIGALRM, deadline_passed)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            pipe = make()
            pipe.set_progress_bar_config(disable=True)
            with first_call_logged(pipe, name, start):
                generate(pipe, PROMPTS[0], args)  # warm-up: compiles, autotunes, captures graphs
            generate(pipe, PROMPTS[0], args)
        except BaseException as exc:  # noqa: BLE001 - a row that fails is recorded, the others go on
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).splitlines()[0][:300] if str(exc) else ""
            notes[name] = f"failed after {time.perf_counter() - start:.0f} s: " \
                f"{type(exc).__name__}: {text}"
            log(notes[name])
            quiesce_compile_workers()
            gc_cuda()
            return
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        extra["build_s"][name] = time.perf_counter() - start
        rows[name] = pipe
        log(f"built {name} in {extra['build_s'][name]:.1f} s")

    build("fp16_eager", lambda: half_copy(fp32, half))
    if want("deepcache_fp16"):
        build("deepcache_fp16", lambda: build_deepcache(half_copy(fp32, half)))
    if want("sdopt_constrained"):
        def make_sdopt():
            backends = backends_of(args.sdopt_backends, args)
            opt = run_sdopt(fp32, args, backends, reuse_search=True)
            res = opt.sdopt_result
            extra["sdopt"] = {
                "backends": backends, "selected": res.selected.id,
                "speedup_vs_fp32": res.speedup, "speedup_source": res.speedup_source,
                "selected_unet_s_per_call": res.selected.latency_s,
                "candidates": [{k: getattr(c, k, None) for k in
                                ("id", "status", "reason", "build_s", "latency_s", "speedup")}
                               for c in res.candidates],
                "techniques": opt.unet.info.get("techniques") if hasattr(opt.unet, "info") else None,
            }
            if res.selected.latency_s:
                extra["sdopt"]["unet_it_per_s"] = 1.0 / res.selected.latency_s
                if flops:
                    extra["sdopt"]["unet_tflop_per_s"] = flops / res.selected.latency_s / 1e12
                    if gemm:
                        extra["sdopt"]["unet_fraction_of_gemm_rate"] = \
                            flops / res.selected.latency_s / gemm
            return opt
        build("sdopt_constrained", make_sdopt)
        if "sdopt_constrained" in rows:
            extra["sdopt"]["optimize_model_cold_s"] = extra["build_s"]["sdopt_constrained"]
            partial("sdopt_constrained")
            if not args.no_warm:
                extra["sdopt"]["warm"] = warm_call(fp32, args, extra["sdopt"]["backends"])

    if want("sdopt_unconstrained"):
        def make_unconstrained():
            backends = backends_of(args.unconstrained_backends, args)
            opt = run_sdopt(fp32, args, backends, optimization_time="unconstrained",
                            reuse_search=False)
            res = opt.sdopt_result
            extra["sdopt_unconstrained"] = {
                "backends": backends, "selected": res.selected.id,
                "speedup_vs_fp32": res.speedup, "speedup_source": res.speedup_source,
                "candidates": [{k: getattr(c, k, None) for k in
                                ("id", "status", "reason", "build_s", "e2e_latency_s",
                                 "metric_drop", "metric_drop_max")}
                               for c in res.candidates]}
            return opt
        build("sdopt_unconstrained", make_unconstrained)
        partial("sdopt_unconstrained")

    if want("diffusers_recipe"):
        cd = not args.recipe_no_coordinate_descent
        build("diffusers_recipe" if cd else "diffusers_recipe_no_cd",
              lambda: build_recipe(half_copy(fp32, half), args.device, coordinate_descent=cd))
    if "fp16_eager" not in rows:
        write(args.out, {"benchmark": "gpu_peers", "rows": {}, "not_built": notes, **extra})
        log("fp16_eager, the reference of every ratio, was not built: nothing to measure")
        return 1
    meas = measure(rows, args, rounds=args.rounds)
    if "sdopt_constrained" in rows and time.perf_counter() - T0 < args.deadline_s:
        extra["sdopt"]["round_trip"] = round_trip(rows["sdopt_constrained"], fp32, args)
    from torch._dynamo.utils import counters
    extra["inductor_counters"] = {k: dict(v) for k, v in counters.items()
                                  if k in ("inductor", "stats")}
    result = summarise(rows, meas, refs, args, notes, {**extra, "partial": False})
    write(args.out, result)
    for name, row in result["rows"].items():
        worst = row["psnr_db_worst"]
        log(f"{name:18s} {row['median_s_per_image'] * 1e3:8.1f} ms/image  "
            f"{row['speedup_vs_fp16_eager_paired']:5.2f}x fp16 eager  worst PSNR "
            + (f"{worst:.1f} dB" if worst is not None else "identical"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
