"""Token merging on the OpenVINO int8 pick, end to end per image (issue #20).

The technique on an OpenVINO pick (``sdopt/techniques/token_merge_openvino.py``) converts the
user's UNet with the merging processors on the first call at a size and quantizes that graph with
the pick's own min/max ranges. This builds the pick as the search does (calibrated on UNet calls
recorded from the fp32 pipeline, ``--calibration-steps`` of them per prompt), makes the fp32
pipeline's reference image, then each pipeline's first image (the merged ones pay their
conversion there: reported), its PSNR against the fp32 image and against the pick's, and times
the pick and the pick with each ratio in interleaved rounds, one image each per round, in this
one process (the median of the per-round ratios is the speedup).

    python benchmarks/openvino_token_merge_e2e.py --preset sd15 --size 512 --steps 20 \
        --out benchmarks/results/openvino_token_merge_e2e_sd15_512.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind

PROMPT = "a photo of an astronaut riding a horse on mars"


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "openvino_token_merge_e2e.json", steps=20, rounds=3,
                               rounds_help="interleaved rounds, one image of each pipeline",
                               steps_help="denoising steps per image", ths=None, device=False)
    parser.add_argument("--base", default="openvino/int8-inner-minmax")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--calibration-steps", type=int, default=4)
    args = parser.parse_args(argv)
    import openvino as ov
    import torch

    import sdopt
    from sdopt.backends import load_builtin_backends
    from sdopt.backends.base import BACKENDS, BuildContext
    from sdopt.device import detect
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.endtoend import EndToEnd, to_uint8
    from sdopt.optimize.metrics import METRICS, psnr_db
    from sdopt.optimize.optimized import assemble
    from sdopt.optimize.paired import interleave, quartiles
    from sdopt.store import write_json
    from sdopt.techniques.token_merge_openvino import OpenVINOTokenMergeModule

    started = time.perf_counter()
    dev = detect("cpu")
    load_builtin_backends()
    pipe = sdopt.build_preset(args.preset)
    e2e = EndToEnd([PROMPT], args.size, args.size, args.steps,
                   metrics=[METRICS["psnr"], METRICS["ssim"]], warmup_steps=0, min_timed=1)
    print(f"reference: fp32 eager, {args.steps} steps, {args.size} px", flush=True)
    reference = e2e.run_reference(pipe)

    samples = collect_samples(pipe, [PROMPT], height=args.size, width=args.size,
                              steps=args.calibration_steps, guidance_scale=7.5, seed=0)
    variant = next(v for v in BACKENDS["openvino"].variants(dev) if v.id == args.base)
    ctx = BuildContext(device=dev, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration])
    t0 = time.perf_counter()
    with torch.inference_mode():
        base = BACKENDS["openvino"].build(pipe.unet, variant, ctx).eval()
    build_s = time.perf_counter() - t0
    print(f"{args.base} built in {build_s:.0f} s on {len(ctx.calibration)} calls", flush=True)

    ratios = [float(r) for r in args.ratios.split(",")]
    pipes = {"pick": assemble(pipe, base, [], dev)}
    for ratio in ratios:
        pipes[f"pick+token_merge({ratio:g})"] = assemble(
            pipe, base, [{"name": "token_merge", "ratio": ratio}], dev)
    first: dict[str, dict] = {}
    images = {}
    for name, p in pipes.items():
        run = e2e.run(p, warm=True)
        images[name] = run.images[0]
        scores = e2e.score(run)
        merged = [m for m in p.unet.modules() if isinstance(m, OpenVINOTokenMergeModule)]
        first[name] = {"first_image_s": run.latencies_s[0],
                       "psnr_db_vs_fp32": scores["psnr"]["db"],
                       "ssim_drop_vs_fp32": scores["ssim"]["mean"],
                       "graph_built": list(merged[0].built.values()) if merged else None}
        print(f"{name}: first image {run.latencies_s[0]:.1f} s, "
              f"{scores['psnr']['db']:.1f} dB vs fp32", flush=True)
    for name in pipes:
        first[name]["psnr_db_vs_pick"] = psnr_db(images["pick"], images[name]) \
            if name != "pick" else None

    def image(p):
        return lambda i: to_uint8(e2e.generate(p, 0))

    rounds = interleave({name: image(p) for name, p in pipes.items()}, rounds=args.rounds,
                        warmup=0)
    speedups = {}
    for name in pipes:
        if name != "pick":
            gain = [a / b for a, b in zip(rounds.samples_s["pick"], rounds.samples_s[name])]
            speedups[name] = {"median": statistics.median(gain), "iqr": list(quartiles(gain))}
    record = {"what": __doc__.splitlines()[0], "preset": args.preset, "size": args.size,
              "steps": args.steps, "prompt": PROMPT, "base": args.base, "cpu": cpu_kind(),
              "openvino": ov.get_version(), "base_build_s": build_s,
              "calibration_calls": len(ctx.calibration),
              "fp32_image_s": reference.latencies_s[0], "first": first,
              "seconds": rounds.samples_s,
              "median_s": {k: statistics.median(v) for k, v in rounds.samples_s.items()},
              "speedup_vs_pick": speedups, "wall_s": time.perf_counter() - started}
    print(json.dumps({k: record[k] for k in ("median_s", "speedup_vs_pick", "first")},
                     indent=1))
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
