"""How each OpenVINO variant's attention really runs: op counts of the IR and of the CPU plugin's
runtime graph, per variant (no timing).

For every openvino variant sdopt builds (fp32, bf16, int8, int8-inner, ...), built as a search
builds it (calibrated on recorded UNet calls): the IR's ScaledDotProductAttention / MatMul /
Softmax / FakeQuantize counts, which SDPA inputs NNCF quantized, and what the compiled runtime
model (``get_runtime_model()``) executes for each SDPA op: the plugin's own SDPA node, one fused
Snippets ``Subgraph``, or decomposed MatMul + Softmax nodes, with each node's runtime precision.
``--snippets-off`` adds each variant compiled with ``SNIPPETS_MODE=DISABLE`` (attention
decomposed), the "before" of a per-op comparison. Writes JSON with the CPU kind.

    python benchmarks/openvino_attention_ops.py                        # tiny, 64 px, seconds
    flock /tmp/sdopt-heavy.lock .venv/bin/python benchmarks/openvino_attention_ops.py \\
        --preset sd15 --size 256 --snippets-off                        # minutes (conversion, NNCF)
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
    parser.add_argument("--out", default=None, help="JSON file (default: results/"
                        "openvino_attention_ops_<preset>_<size>.json)")
    args = parser.parse_args(argv)

    import torch

    import sdopt
    from sdopt.backends import get_backend
    from sdopt.backends.base import BuildContext
    from sdopt.backends.openvino_ops import module_attention_report
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
    rows = []
    for variant in backend.variants(device):
        if wanted and variant.name not in wanted:
            continue
        reason = backend.unavailable_reason(device, variant)
        if reason:
            rows.append({"variant": variant.id, "skipped": reason})
            continue
        with torch.inference_mode():
            module = backend.build(pipe.unet, variant, ctx)
        for config in configs:
            report = module_attention_report(module, example, config)
            rows.append(report)
            att = report["attention"]
            print(f"{variant.id:22s} {json.dumps(config or {}):28s} IR {report['ir']}  "
                  f"runtime {report['runtime']}  attention {att['execution']} {att['nodes']}",
                  flush=True)
    out = args.out or str(bench_args.RESULTS /
                          f"openvino_attention_ops_{args.preset}_{args.size}.json")
    write_json(out, {"preset": args.preset, "size": args.size, "rows": rows,
                     "environment": {"cpu": cpu_kind(), "device": device.fingerprint(),
                                     "libraries": library_versions()}})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
