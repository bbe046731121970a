"""End-to-end speedup and image quality of each unconstrained technique, side by side.

Builds the ``sd15`` preset (SD 1.5 architecture, random weights), makes the reference images with
the original fp32 pipeline, then runs the same search phase ``optimize_model(...,
optimization_time="unconstrained")`` runs (:func:`sdopt.optimize.search.run_technique_search`): every
technique setting alone on fp32 and on the constrained base (``--base``, default
``torch_eager/bf16``, the best torch backend here), then the passing ones stacked. Every row is a
whole pipeline timed per image (prompt to pixels) in this one process, with PSNR/SSIM of its images
against the original's. Finally the constrained base and the unconstrained winner are timed in
alternation (A B A B ...) so that machine drift hits both, and the ratio is printed.

    flock /tmp/sdopt-heavy.lock python benchmarks/techniques_e2e.py --size 256 --steps 20

Random weights make the images noise-like, which is pessimistic for step caching and fewer steps
(real models change slowly between neighbouring steps); the numbers are reported as measured.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import bench_args  # this folder: scripts run as python benchmarks/NAME.py

PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night"]


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "techniques_e2e.json", steps=20, rounds=3,
                               steps_help="denoising steps per image",
                               rounds_help="A/B rounds of the final pair",
                               ths="psnr drop threshold (RMSE/255)")
    parser.add_argument("--prompts", type=int, default=1, help="how many prompts (images) per row")
    parser.add_argument("--base", default="torch_eager/bf16", help="the constrained best backend")
    parser.add_argument("--base-model", default=None,
                        help="a saved constrained model (save_model folder) as the base instead, "
                             "e.g. the peers benchmark's optimize_model pick; its UNet is the "
                             "base, its own techniques are searched again like the others")
    parser.add_argument("--base-only", action="store_true",
                        help="search the techniques on the constrained base only (not on fp32 "
                             "as well): half the rows, for a quick look at the base's")
    args = parser.parse_args(argv)

    import torch

    import sdopt
    from sdopt.backends.torch_eager import reference_module
    from sdopt.device import detect, library_versions
    from sdopt.optimize.endtoend import EndToEnd, fill_row
    from sdopt.optimize.metrics import METRICS
    from sdopt.optimize.optimized import assemble
    from sdopt.optimize.search import run_technique_search
    from sdopt.optimize.table import CandidateResult, OptimizationResult, set_e2e_speedup
    from sdopt.store import write_json

    started = time.perf_counter()
    dev = detect(args.device)
    pipe = sdopt.build_preset(args.preset).to(dev.torch_device)
    prompts = PROMPTS[:args.prompts]
    e2e = EndToEnd(prompts, args.size, args.size, args.steps,
                   metrics=[METRICS["psnr"], METRICS["ssim"]], min_timed=1)
    print(f"reference: fp32 eager, {args.steps} steps, {args.size} px", flush=True)
    e2e.run_reference(pipe)

    original = CandidateResult("torch_eager/fp32", "torch_eager", "fp32", "fp32", [], "ok")
    fill_row(original, e2e.reference, e2e, METRICS["psnr"])
    set_e2e_speedup(original, original)
    if args.base_model:
        from sdopt.optimize.optimized import with_unet
        from sdopt.techniques import base_module as unwrap

        # load_model fills the pipeline it is given: a new one, so ``pipe`` stays fp32.
        saved = sdopt.load_model(args.base_model, with_unet(pipe, pipe.unet),
                                 device=args.device)
        base_module = unwrap(saved.unet.module)
        args.base = base_module.variant.id
        base_pipe = assemble(pipe, base_module, [], dev)  # the UNet alone, no techniques
    elif "int8" in args.base.partition("/")[2] and args.base.startswith("openvino/"):
        base_module = calibrated_base(pipe, args, prompts, dev)
        base_pipe = assemble(pipe, base_module, [], dev)
    else:
        base_pipe = sdopt.apply_variant(pipe, args.base, device=args.device, height=args.size,
                                        width=args.size)
        base_module = base_pipe.unet.module
    backend, _, variant = args.base.partition("/")
    base = CandidateResult(args.base, backend, variant, base_module.variant.precision,
                           list(base_module.variant.techniques), "ok")
    print(f"constrained base: {args.base}", flush=True)
    fill_row(base, e2e.run(base_pipe), e2e, METRICS["psnr"])
    set_e2e_speedup(base, original)
    result = OptimizationResult(device=dev.fingerprint(), metric="numeric_precision",
                                metric_drop_ths=args.ths, optimization_time="unconstrained",
                                samples={}, candidates=[original, base], original=original,
                                selected=base, image_metric="psnr")

    def evaluate(module, specs, row, alongside=()):  # unconstrained: nothing alongside
        fill_row(row, e2e.run(assemble(pipe, module, specs, dev)), e2e, METRICS["psnr"])
        psnr = row.image_metrics["psnr"]["mean"]
        print(f"  {row.id}: {row.e2e_latency_s:.2f} s/image, psnr drop {psnr:.4f},"
              f" ssim drop {row.image_metrics['ssim']['mean']:.3f}", flush=True)

    bases = [(base, base_module)] if args.base_only else \
        [(original, reference_module(pipe.unet)), (base, base_module)]
    ranked = run_technique_search(
        result, bases, dev,
        metric_drop_ths=args.ths, image_metric="psnr", evaluate=evaluate,
        on_candidate=lambda cid, phase: phase == "start" and print(f"candidate {cid}", flush=True))
    win_row, win_specs = ranked[0]
    win_module = base_module if win_row.id.startswith(args.base) else \
        reference_module(pipe.unet)
    win_pipe = assemble(pipe, win_module, win_specs, dev)

    # The final pair, in alternation.
    pair = {"constrained": [], "unconstrained": []}
    for _ in range(args.rounds):
        for name, p in (("constrained", base_pipe), ("unconstrained", win_pipe)):
            pair[name].append(EndToEnd(prompts[:1], args.size, args.size, args.steps,
                                       warmup_steps=0, min_timed=1).run(p).latencies_s[0])
    med = {k: statistics.median(v) for k, v in pair.items()}
    paired = statistics.median(a / b for a, b in zip(pair["constrained"], pair["unconstrained"]))
    out = {
        "benchmark": "techniques_e2e", "preset": args.preset, "size": args.size,
        "steps": args.steps, "prompts": prompts, "threshold_psnr_drop": args.ths,
        "threshold_psnr_db": -20 * __import__("math").log10(args.ths),
        "constrained_base": args.base, "unconstrained_winner": win_row.id,
        "winner_techniques": win_specs,
        "alternating_rounds": pair, "median_s": med,
        "unconstrained_vs_constrained_ratio_of_medians": med["constrained"] / med["unconstrained"],
        "unconstrained_vs_constrained_median_paired_ratio": paired,
        "rows": [{"id": c.id, "status": c.status, "reason": c.reason,
                  "e2e_latency_s": c.e2e_latency_s, "e2e_speedup_vs_fp32": c.e2e_speedup,
                  "e2e_speedup_vs_constrained": (base.e2e_latency_s / c.e2e_latency_s
                                                 if c.e2e_latency_s else None),
                  "psnr_db": c.image_metrics.get("psnr", {}).get("db"),
                  "psnr_drop": c.image_metrics.get("psnr", {}).get("mean"),
                  "ssim_drop": c.image_metrics.get("ssim", {}).get("mean"),
                  "techniques": c.pipeline_techniques} for c in result.candidates],
        "device": dev.fingerprint(), "libraries": library_versions(),
        "environment": {k: os.environ.get(k) for k in (
            "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
            "OMP_NUM_THREADS")},
        "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - started,
    }
    write_json(args.out, out)
    print(f"\n{'candidate':70s} {'s/image':>8s} {'vs fp32':>8s} {'vs base':>8s} {'PSNR dB':>8s}"
          f" {'1-SSIM':>7s}  status")
    for r in out["rows"]:
        if r["e2e_latency_s"]:
            print(f"{r['id']:70s} {r['e2e_latency_s']:8.2f} {r['e2e_speedup_vs_fp32']:7.2f}x "
                  f"{r['e2e_speedup_vs_constrained']:7.2f}x {r['psnr_db'] or float('inf'):8.1f} "
                  f"{r['ssim_drop']:7.3f}  {r['status']}")
    print(f"\nunconstrained winner {win_row.id} vs constrained {args.base}, alternating "
          f"{args.rounds} rounds: {out['unconstrained_vs_constrained_ratio_of_medians']:.2f}x "
          f"(median paired {paired:.2f}x); written to {args.out}")
    return 0


def calibrated_base(pipe, args, prompts, dev):
    """An OpenVINO int8 base calibrated as the search calibrates it: on UNet calls recorded
    from the original pipeline with the benchmark's prompts, size and steps."""
    import torch

    from sdopt.backends import load_builtin_backends
    from sdopt.backends.base import BACKENDS, BuildContext
    from sdopt.optimize.capture import collect_samples

    load_builtin_backends()

    samples = collect_samples(pipe, prompts, height=args.size, width=args.size,
                              steps=args.steps, guidance_scale=7.5, seed=0)
    backend = BACKENDS["openvino"]
    variant = next(v for v in backend.variants(dev) if v.id == args.base)
    ctx = BuildContext(device=dev, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration])
    print(f"calibrating {args.base} on {len(ctx.calibration)} recorded UNet calls", flush=True)
    with torch.inference_mode():
        return backend.build(pipe.unet, variant, ctx).eval()


if __name__ == "__main__":
    sys.exit(main())
