"""How each OpenVINO variant's attention really runs: op counts of the IR and of the CPU plugin's
runtime graph, per variant (no timing).

For every openvino variant sdopt builds (fp32, bf16, int8, int8-inner, ...), built as a search
builds it (calibrated on recorded UNet calls): the IR's ScaledDotProductAttention / MatMul /
Softmax / FakeQuantize counts, which SDPA inputs NNCF quantized, and what the compiled runtime
model (``get_runtime_model()``) executes for each SDPA op: the plugin's own SDPA node, one fused
Snippets ``Subgraph``, or decomposed MatMul + Softmax nodes, with each node's runtime precision.
``--snippets-off`` adds each variant compiled with ``SNIPPETS_MODE=DISABLE`` (attention
decomposed), the "before" of a per-op comparison; ``--int8-sdpa-float`` adds an int8 build with
the SDPA ops left out of NNCF's scope (QK^T in bf16 instead of i8). ``--perf-counters N`` times
each row with OpenVINO's per-node counters (median of N inferences: total, attention's share, time
per layer type): a timing, for a quiet machine only. Writes JSON with the CPU kind.

    python benchmarks/openvino_attention_ops.py                        # tiny, 64 px, seconds
    flock /tmp/sdopt-heavy.lock .venv/bin/python benchmarks/openvino_attention_ops.py \\
        --preset sd15 --size 256 --snippets-off                        # minutes (conversion, NNCF)
    # quiet machine: per-op time of attention, fused vs decomposed, int8 QK^T vs bf16
    flock /tmp/sdopt-heavy.lock .venv/bin/python benchmarks/openvino_attention_ops.py \
        --preset sd15 --size 512 --variants bf16,int8-inner --int8-sdpa-float --snippets-off \
        --perf-counters 5
    # the same with OpenVINO's one-pass min/max int8 (no NNCF calibration: minutes less)
    ... --variants bf16,int8-inner-minmax --int8-sdpa-float --sdpa-float-quantizer minmax
"""

from __future__ import annotations

import argparse
import json
import sys

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind

PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="steps of the recorded calls")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant names (default: every openvino variant)")
    parser.add_argument("--snippets-off", action="store_true",
                        help="also compile each variant with SNIPPETS_MODE=DISABLE")
    parser.add_argument("--int8-sdpa-float", action="store_true",
                        help="also build int8 with the ScaledDotProductAttention ops left out")
    parser.add_argument("--sdpa-float-quantizer", choices=("nncf", "minmax"), default="nncf",
                        help="how --int8-sdpa-float quantizes (minmax: derived from "
                             "int8-minmax's IR in seconds, no NNCF calibration)")
    parser.add_argument("--float-types", default="", metavar="TYPES",
                        help="also build int8 leaving these comma-separated op types in float "
                        "(MatMul: convolutions alone in int8), quantized as "
                        "--sdpa-float-quantizer says")
    parser.add_argument("--perf-counters", type=int, default=0, metavar="N",
                        help="time each row with PERF_COUNT over N inferences (quiet machine)")
    parser.add_argument("--out", default=None, help="JSON file (default: results/"
                        "openvino_attention_ops_<preset>_<size>.json)")
    args = parser.parse_args(argv)

    import torch

    import sdopt
    from sdopt.backends import get_backend
    from sdopt.backends.base import BuildContext, Variant
    from sdopt.backends.openvino_ops import module_attention_report, module_perf_counters
    from sdopt.device import detect, library_versions
    from sdopt.optimize.capture import collect_samples
    from sdopt.store import write_json

    device = detect("cpu")
    pipe = sdopt.build_preset(args.preset)
    samples = collect_samples(pipe, PROMPTS, height=args.size, width=args.size, steps=args.steps,
                              guidance_scale=7.5, seed=0, n_verify=2)
    example = samples.verification[0].inputs
    ctx = BuildContext(device=device, example=example,
                       calibration=[s.inputs for s in samples.calibration])
    backend = get_backend("openvino")
    wanted = args.variants.split(",") if args.variants else None
    configs = [None] + ([{"SNIPPETS_MODE": "DISABLE"}] if args.snippets_off else [])
    variants = [v for v in backend.variants(device) if not wanted or v.name in wanted]
    def int8_with_float(name: str, types: list[str]) -> Variant:
        """int8 with these op types left in float, quantized as --sdpa-float-quantizer says."""
        return Variant("openvino", name, "int8",
                       options={"quantizer": args.sdpa_float_quantizer, "ignored_types": types})

    if args.int8_sdpa_float:
        variants.append(int8_with_float("int8-sdpa-float", ["ScaledDotProductAttention"]))
    if args.float_types:
        types = args.float_types.split(",")
        variants.append(int8_with_float("int8-float-" + "-".join(types), types))
    rows = []
    for variant in variants:
        reason = backend.unavailable_reason(device, variant)
        if reason:
            rows.append({"variant": variant.id, "skipped": reason})
            continue
        with torch.inference_mode():
            module = backend.build(pipe.unet, variant, ctx)
        for config in configs:
            report = module_attention_report(module, example, config)
            if args.perf_counters:
                report["perf"] = module_perf_counters(module, example, args.perf_counters, config)
            rows.append(report)
            att = report["attention"]
            print(f"{variant.id:22s} {json.dumps(config or {}):28s} IR {report['ir']}  "
                  f"runtime {report['runtime']}  attention {att['execution']} {att['nodes']}",
                  flush=True)
            if "perf" in report:
                perf = report["perf"]
                print(f"    {perf['total_ms']:.1f} ms per call, attention {perf['attention_ms']:.1f}"
                      f" ms ({perf['attention_share']:.0%})", flush=True)
    out = args.out or str(bench_args.RESULTS /
                          f"openvino_attention_ops_{args.preset}_{args.size}.json")
    write_json(out, {"preset": args.preset, "size": args.size, "rows": rows,
                     "environment": {"cpu": cpu_kind(), "device": device.fingerprint(),
                                     "libraries": library_versions()}})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
