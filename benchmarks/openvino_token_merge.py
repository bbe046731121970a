"""Token merging inside an OpenVINO UNet graph: does the converted graph merge as the eager
technique does, and what does it save per UNet call? (issue #20: the first check of the plan in
the ninth session's note. The technique on the OpenVINO pick,
``sdopt/techniques/token_merge_openvino.py``, grew from it; its end-to-end figures:
``openvino_token_merge_e2e.py``.)

The eager technique (``sdopt/techniques/token_merge.py``) swaps the attention processors of the
highest-resolution self-attentions; its destination choice is seeded, so a conversion with the
processors installed traces the matching (normalised-metric MatMul, max/argsort, gathers, a mean
scatter) into the graph with the token counts of the traced size as constants. This converts the
UNet with and without the processors, checks the merged graph (f32 hint) against the eager merged
UNet, and times the two graphs at the precision hint of the CPU's float path (bf16 where it has
bf16 units), interleaved in one process.

    python benchmarks/openvino_token_merge.py --preset sd15 --size 512 --perf-counters 3 \
        --out benchmarks/results/openvino_token_merge_sd15_512.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "openvino_token_merge.json", steps=0, rounds=5,
                               rounds_help="timed rounds, each graph once per round",
                               steps_help="unused", ths=None, device=False)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--perf-counters", type=int, default=0, metavar="RUNS",
                        help="after the rounds, OpenVINO's per-node counters of both graphs "
                             "(medians of RUNS inferences)")
    args = parser.parse_args(argv)
    import openvino as ov
    import torch

    import sdopt
    from sdopt.backends.base import UNetInputs
    from sdopt.backends.export import named_args
    from sdopt.backends.openvino import CompiledPerShape, convert_unet, float_layers_precision
    from sdopt.device import detect
    from sdopt.optimize.metrics import numeric_precision
    from sdopt.optimize.paired import interleave, quartiles
    from sdopt.techniques.token_merge import TokenMergeProcessor, self_attentions

    pipe = sdopt.build_preset(args.preset)
    unet = pipe.unet.eval()
    side = args.size // pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    width = unet.config.cross_attention_dim
    example = UNetInputs(torch.randn(2, unet.config.in_channels, side, side, generator=generator),
                         torch.tensor(500.0),
                         torch.randn(2, 77, width, generator=generator), {})
    arrays = {k: v.numpy() for k, v in named_args(example).items()}

    def call():
        with torch.no_grad():
            return unet(example.sample, example.timestep, example.encoder_hidden_states).sample

    plain_eager = call()
    layers = self_attentions(unet, 1)
    originals = [attn.processor for attn in layers]
    grid: dict = {}
    hook = unet.conv_in.register_forward_pre_hook(
        lambda mod, a: grid.__setitem__("hw", tuple(a[0].shape[-2:])))
    for attn in layers:
        attn.set_processor(TokenMergeProcessor(attn.processor, args.ratio, grid))
    merged_eager = call()
    tokens = (layers[0].processor.tokens_in, layers[0].processor.tokens_attended)
    merged_ir = convert_unet(unet, example)
    for attn, processor in zip(layers, originals):
        attn.set_processor(processor)
    hook.remove()
    plain_ir = convert_unet(unet, example)
    kinds = sorted({op.get_type_name() for op in merged_ir.get_ops()} -
                   {op.get_type_name() for op in plain_ir.get_ops()})

    def run(graph):
        request = graph.infer([arrays[name] for name in graph.names])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    exact = {"plain": CompiledPerShape(plain_ir, "f32"), "merged": CompiledPerShape(merged_ir, "f32")}
    error = {"merged_graph_vs_merged_eager": numeric_precision(merged_eager, run(exact["merged"])),
             "plain_graph_vs_plain_eager": numeric_precision(plain_eager, run(exact["plain"])),
             "merged_eager_vs_plain_eager": numeric_precision(plain_eager, merged_eager)}
    del exact
    precision = float_layers_precision(detect("cpu"))
    hint = {"bf16": "bf16", "fp32": "f32"}[precision]
    graphs = {"plain": CompiledPerShape(plain_ir, hint), "merged": CompiledPerShape(merged_ir, hint)}
    rounds = interleave({name: (lambda g: lambda i: run(g))(g) for name, g in graphs.items()},
                        rounds=args.rounds)
    gain = [a / b for a, b in zip(rounds.samples_s["plain"], rounds.samples_s["merged"])]
    counters = {}
    if args.perf_counters:
        import types

        from sdopt.backends.openvino_ops import module_perf_counters

        for name, graph in graphs.items():
            report = module_perf_counters(types.SimpleNamespace(graph=graph), example,
                                          runs=args.perf_counters, top=12)
            report["by_type_ms"] = dict(list(report["by_type_ms"].items())[:15])
            counters[name] = report
    record = {"what": __doc__.splitlines()[0], "preset": args.preset, "size": args.size,
              "ratio": args.ratio, "cpu": cpu_kind(), "openvino": ov.get_version(),
              "precision_hint": hint, "layers_merged": len(layers),
              "tokens_per_layer": {"in": tokens[0], "attended": tokens[1]},
              "ops_only_in_merged_graph": kinds, "numeric_error": error,
              "seconds": rounds.samples_s,
              "merged_speedup": {"median": statistics.median(gain), "iqr": list(quartiles(gain))},
              "perf_counters": counters}
    print(json.dumps({k: record[k] for k in ("tokens_per_layer", "ops_only_in_merged_graph",
                                             "numeric_error", "merged_speedup")}, indent=1))
    for name, report in counters.items():
        print(name, report["total_ms"], "ms;", json.dumps(report["by_type_ms"]))
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
