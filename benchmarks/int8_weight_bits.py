"""8-bit against 7-bit int8 weights on this CPU, side by side: drop and speed.

Without VNNI an x86 CPU sums u8 x s8 products in saturating 16-bit lanes (``vpmaddubsw``), so
an int8 graph with 8-bit weights computes worse there than where it was judged;
``DeviceInfo.int8_weight_bits`` gives 7 on such CPUs (docs/backends.md). This builds one
OpenVINO int8 variant (``--variant``, min/max by default: no NNCF calibration) of a preset's
UNet twice, for this CPU described with VNNI (8-bit weights) and without (7-bit), from the same
recorded calls, and reports each one's drop (the search's default metric, relative L1 of the
noise prediction, on the held-out calls) and its UNet call time, the two timed in alternation in
this process, with the CPU kind. On a CPU with VNNI both graphs run without saturation and the
difference is the weights' precision alone.

    python benchmarks/int8_weight_bits.py --preset sd15 --size 256
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind

PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night",
           "a portrait of an old fisherman, oil on canvas"]


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "int8_weight_bits.json", steps=4, rounds=5,
                               rounds_help="interleaved timing rounds", ths=None, device=False)
    parser.add_argument("--variant", default="int8-inner-minmax")
    args = parser.parse_args(argv)

    import torch

    import sdopt
    from sdopt.backends import get_backend
    from sdopt.backends.base import BuildContext
    from sdopt.device import VNNI_FLAGS, detect
    from sdopt.models import denoiser_of
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.metrics import resolve_metric

    pipe = sdopt.build_preset(args.preset)
    samples = collect_samples(pipe, PROMPTS, height=args.size, width=args.size,
                              steps=args.steps, guidance_scale=7.5, seed=0, n_verify=3)
    cpu = detect("cpu")
    flags = tuple(f for f in cpu.cpu_flags if f not in VNNI_FLAGS)
    devices = {8: dataclasses.replace(cpu, cpu_flags=flags + ("avx512_vnni",)),
               7: dataclasses.replace(cpu, cpu_flags=flags)}
    backend = get_backend("openvino")
    metric = resolve_metric(None)
    modules, rows = {}, {}
    cache = Path(tempfile.mkdtemp(prefix="sdopt-weight-bits-"))
    for bits, device in devices.items():
        variant = next(v for v in backend.variants(device) if v.name == args.variant)
        ctx = BuildContext(device=device, example=samples.verification[0].inputs,
                           calibration=[s.inputs for s in samples.calibration], cache_dir=cache,
                           calibration_ranges=samples.calibration_ranges())
        started = time.perf_counter()
        with torch.inference_mode():
            module = modules[bits] = backend.build(denoiser_of(pipe), variant, ctx)
            drops = [float(metric.fn(s.reference, module(s.inputs.sample, s.inputs.timestep,
                                                         s.inputs.encoder_hidden_states)))
                     for s in samples.verification]
        rows[bits] = {"build_s": round(time.perf_counter() - started, 1),
                      "weight_bits": module.build_info["int8"].get("weight_bits", 8),
                      "drops": drops, "drop_max": max(drops), "drop_mean": statistics.mean(drops),
                      "seconds": []}
        print(f"{bits}-bit weights: worst drop {max(drops):.4f}, mean {statistics.mean(drops):.4f}",
              flush=True)
    example = samples.verification[0].inputs
    with torch.inference_mode():
        for module in modules.values():  # compile and warm
            module(example.sample, example.timestep, example.encoder_hidden_states)
        for i in range(args.rounds):
            for bits in (list(modules) if i % 2 == 0 else list(modules)[::-1]):
                started = time.perf_counter()
                modules[bits](example.sample, example.timestep, example.encoder_hidden_states)
                rows[bits]["seconds"].append(time.perf_counter() - started)
    ratios = sorted(a / b for a, b in zip(rows[7]["seconds"], rows[8]["seconds"]))
    for row in rows.values():
        row["median_s"] = statistics.median(row["seconds"])
    record = {"benchmark": "int8_weight_bits", "preset": args.preset, "size": args.size,
              "steps": args.steps, "variant": f"openvino/{args.variant}", "cpu": cpu_kind(),
              "cpu_flags": list(cpu.cpu_flags), "this_cpu_weight_bits": cpu.int8_weight_bits(),
              "metric": "numeric_precision (relative L1 of the noise prediction)",
              "rows": {f"{b}-bit": r for b, r in rows.items()},
              "seven_over_eight_s_median": statistics.median(ratios),
              "seven_over_eight_s_range": [ratios[0], ratios[-1]], "unix_time": int(time.time())}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"7-bit / 8-bit seconds per call (paired): {statistics.median(ratios):.3f} "
          f"({ratios[0]:.3f}-{ratios[-1]:.3f}); {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
