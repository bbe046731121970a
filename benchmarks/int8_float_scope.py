"""Which layers to leave out of min/max int8 on this CPU: drop and speed, side by side.

On a CPU without VNNI (AMD Zen 3, the GitHub runners' kind) OpenVINO's per-op counters showed
int8 FullyConnected slower than f32 (1098 against 900 ms per call summed, sd15 at 256 px) and
int8 attention running decomposed (281-298 ms) where the float one runs fused (189 ms), while int8
convolutions were 2.4x faster than f32 (results/openvino_int8_conv_sd15_256_zen3.json,
results/openvino_attention_ops_sd15_256_zen3.json; sequential profiles). This builds the search's
``int8-inner-minmax`` and the same min/max quantization with more op types left in float
(``--scopes``: comma-separated groups of ``+``-joined OpenVINO op types), plus OpenVINO fp32, from
the same recorded calls; reports each one's drop (the search's default metric on the held-out
calls) and its UNet call time, all timed in rotated rounds in this process, with the CPU kind;
``--candidates`` adds the search's own candidates (another runtime's int8) to the same rounds.

    python benchmarks/int8_float_scope.py --preset sd15 --size 256
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from int8_weight_bits import PROMPTS
from search_cold import cpu_kind


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "int8_float_scope.json", steps=4, rounds=8,
                               rounds_help="rotated timing rounds", ths=None, device=False)
    parser.add_argument("--scopes", default="ScaledDotProductAttention,"
                        "MatMul+ScaledDotProductAttention",
                        help="op-type groups left in float on top of int8-inner-minmax's edges")
    parser.add_argument("--candidates", default="",
                        help="search candidates (backend/variant ids, comma-separated) timed in "
                             "the same rounds, e.g. openvino/int8-conv-minmax,"
                             "onnxruntime/int8-static")
    parser.add_argument("--cache", default=None,
                        help="sdopt's IR cache folder (default: a new one; a rerun reuses its IRs)")
    args = parser.parse_args(argv)

    import torch

    import sdopt
    from sdopt.backends import get_backend
    from sdopt.backends.base import BuildContext, Variant
    from sdopt.backends.openvino import INT8_EDGE_PATTERNS
    from sdopt.device import detect
    from sdopt.models import denoiser_of
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.metrics import resolve_metric

    pipe = sdopt.build_preset(args.preset)
    samples = collect_samples(pipe, PROMPTS, height=args.size, width=args.size,
                              steps=args.steps, guidance_scale=7.5, seed=0, n_verify=3)
    cpu = detect("cpu")
    backend = get_backend("openvino")
    by_name = {v.name: v for v in backend.variants(cpu)}
    variants = {"fp32": by_name["fp32"], "int8-inner-minmax": by_name["int8-inner-minmax"]}
    for candidate in filter(None, args.candidates.split(",")):
        backend_name, _, name = candidate.partition("/")
        found = {v.name: v for v in get_backend(backend_name).variants(cpu)}
        if name not in found:
            parser.error(f"--candidates: {candidate} is not a candidate on this CPU "
                         f"(has: {', '.join(found)})")
        variants[candidate] = found[name]
    for scope in filter(None, args.scopes.split(",")):
        types = scope.split("+")
        variants["int8-inner-minmax, float " + "+".join(types)] = Variant(
            "openvino", "int8-inner-minmax-float-" + "-".join(types), "int8",
            options={"quantizer": "minmax", "ignored_patterns": list(INT8_EDGE_PATTERNS),
                     "ignored_types": types})
    metric = resolve_metric(None)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="sdopt-float-scope-"))
    ctx = BuildContext(device=cpu, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration], cache_dir=cache,
                       calibration_ranges=samples.calibration_ranges())
    modules, rows = {}, {}
    for name, variant in variants.items():
        started = time.perf_counter()
        with torch.inference_mode():
            module = modules[name] = get_backend(variant.backend).build(denoiser_of(pipe),
                                                                        variant, ctx)
            drops = [float(metric.fn(s.reference, module(s.inputs.sample, s.inputs.timestep,
                                                         s.inputs.encoder_hidden_states)))
                     for s in samples.verification]
        rows[name] = {"variant_options": variant.options,
                      "build_s": round(time.perf_counter() - started, 1),
                      "drops": drops, "drop_max": max(drops), "drop_mean": statistics.mean(drops),
                      "seconds": []}
        print(f"{name:50s} built in {rows[name]['build_s']:5.1f} s, worst drop {max(drops):.4f}",
              flush=True)
    example = samples.verification[0].inputs
    names = list(modules)
    with torch.inference_mode():
        for module in modules.values():  # warm
            module(example.sample, example.timestep, example.encoder_hidden_states)
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                started = time.perf_counter()
                modules[name](example.sample, example.timestep, example.encoder_hidden_states)
                rows[name]["seconds"].append(time.perf_counter() - started)
    base = rows["int8-inner-minmax"]["seconds"]
    for name, row in rows.items():
        row["median_s"] = statistics.median(row["seconds"])
        ratios = sorted(b / s for b, s in zip(base, row["seconds"]))
        row["speedup_vs_int8_inner_minmax_paired"] = statistics.median(ratios)
        row["speedup_range"] = [ratios[0], ratios[-1]]
        print(f"{name:50s} {row['median_s'] * 1e3:7.0f} ms  {statistics.median(ratios):.3f}x "
              f"int8-inner-minmax ({ratios[0]:.3f}-{ratios[-1]:.3f})  worst drop "
              f"{row['drop_max']:.4f}", flush=True)
    record = {"benchmark": "int8_float_scope", "preset": args.preset, "size": args.size,
              "steps": args.steps, "cpu": cpu_kind(), "cpu_flags": list(cpu.cpu_flags),
              "has_vnni": cpu.has_vnni(), "rounds": args.rounds,
              "metric": "numeric_precision (relative L1 of the noise prediction)",
              "rows": rows, "unix_time": int(time.time())}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
