"""Compiler backends (OpenVINO fp32/bf16/int8, ONNX Runtime fp32) against PyTorch fp32 eager.

Builds the ``sd15`` preset (SD 1.5 architecture, random weights), records real UNet calls at the
given size (classifier-free guidance: batch 2), builds each candidate through its backend (the
export/engine cache is used and its hits are reported), measures its metric drop on the held-out
calls, then times it against fp32 eager in alternation (A B A B, the order flipped every round,
so machine drift hits both) and frees it before the next one: holding every SD 1.5 candidate at
once (3.4 GB each in fp32) got the process OOM-killed on this 24 GB machine. Finally ``optimize_model`` runs on the same
prompts with the new backends enabled, to show what the search picks within the threshold.

    flock /tmp/sdopt-heavy.lock env MALLOC_MMAP_THRESHOLD_=33554432 \
        MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \
        .venv/bin/python benchmarks/compiler_backends.py --size 256
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import torch

import bench_args  # this folder: scripts run as python benchmarks/NAME.py

PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night",
           "portrait of a cat wearing a hat, studio light"]
CANDIDATES = ("torch_eager/bf16", "openvino/fp32", "openvino/bf16", "openvino/int8",
              "openvino/int8-matmul", "openvino/int8-conv", "onnxruntime/fp32",
              "onnxruntime/int8-dynamic", "onnxruntime/int8-static")
GOAL = 3.6


def _rel_l2(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "compiler_backends.json", steps=6, rounds=6,
                               rounds_help="A/B rounds per candidate", device=False)
    parser.add_argument("--candidate", action="append", default=None,
                        help=f"backend/variant to compare (default: {', '.join(CANDIDATES)})")
    parser.add_argument("--search-backends", default="torch_eager,openvino,onnxruntime",
                        help="backends optimize_model may use ('' skips the search)")
    args = parser.parse_args(argv)

    import sdopt
    from sdopt.backends import get_backend
    from sdopt.backends.torch_module import TorchUNetModule
    from sdopt.backends.base import BuildContext, Variant
    from sdopt.cache import cache_root
    from sdopt.device import detect, library_versions
    from sdopt.optimize.metrics import resolve_metric
    from sdopt.optimize.capture import collect_samples
    from sdopt.store import write_json
    from sdopt.optimize.timing import RssSampler

    device = detect("cpu")
    metric = resolve_metric(None)
    t0 = time.perf_counter()
    pipe = sdopt.build_preset(args.preset)
    build_preset_s = time.perf_counter() - t0
    # The same call optimize_model makes, so its int8 calibration set (and cache key) is ours.
    t0 = time.perf_counter()
    samples = collect_samples(pipe, PROMPTS, height=args.size, width=args.size, steps=args.steps,
                              guidance_scale=7.5, seed=0, n_verify=8)
    collect_s = time.perf_counter() - t0
    ctx = BuildContext(device=device, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration])
    print(f"{args.preset} built in {build_preset_s:.1f} s; {len(samples.samples)} UNet calls "
          f"recorded in {collect_s:.1f} s; cache {cache_root()}", flush=True)

    reference = Variant("torch_eager", "fp32", "fp32", lossless=True)
    modules = {"torch_eager/fp32": TorchUNetModule(pipe.unet, reference, torch.float32)}
    rows = {"torch_eager/fp32": {"id": "torch_eager/fp32", "build_s": 0.0, "metric_drop": 0.0,
                                 "rel_l2_mean": 0.0}}
    for cid in args.candidate or CANDIDATES:
        backend_name, _, variant_name = cid.partition("/")
        backend = get_backend(backend_name)
        variant = next(v for v in backend.variants(device) if v.name == variant_name)
        row = rows[cid] = {"id": cid}
        reason = backend.unavailable_reason(device, variant)
        if reason:
            row.update(status="skipped", reason=reason)
            continue
        gc.collect()
        sampler = RssSampler()
        sampler.start()
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                module = backend.build(pipe.unet, variant, ctx).eval()
                inp = ctx.example
                module(inp.sample, inp.timestep, inp.encoder_hidden_states)  # compiles here
        except Exception as exc:  # noqa: BLE001 - a failing candidate is a row, not a crash
            row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
            sampler.stop()
            continue
        row["build_s"] = time.perf_counter() - t0
        row["build_peak_rss_bytes"] = sampler.stop()
        row["cache"] = getattr(module, "build_info", {})
        drops, l2 = [], []
        with torch.inference_mode():
            for s in samples.verification:
                out = module(s.inputs.sample, s.inputs.timestep, s.inputs.encoder_hidden_states)
                drops.append(float(metric.fn(s.reference, out)))
                l2.append(_rel_l2(s.reference, out))
        row.update(status="ok", metric_drop=statistics.mean(drops), metric_drop_max=max(drops),
                   rel_l2_mean=statistics.mean(l2), rel_l2_max=max(l2),
                   model_size_bytes=module.size_bytes())
        print(f"{cid}: built in {row['build_s']:.1f} s (cache {_hits(row['cache'])}), "
              f"{metric.name} drop {row['metric_drop']:.4f}, rel L2 {row['rel_l2_mean']:.4f}",
              flush=True)
        _time_against(modules["torch_eager/fp32"], module, row, rows["torch_eager/fp32"],
                      [s.inputs for s in samples.verification[:3]], args.rounds)
        print(f"{cid:26} {row['latency_median_s']:.3f} s vs fp32 eager "
              f"{row['fp32_eager_median_s']:.3f} s: {row['speedup_vs_fp32_eager']:.2f}x "
              f"(paired {row['speedup_median_paired']:.2f}x)", flush=True)
        del module
        gc.collect()
    ref = rows["torch_eager/fp32"]
    ref["latency_median_s"] = statistics.median(ref.pop("latency_samples_s"))
    ref["speedup_vs_fp32_eager"] = 1.0
    del modules
    gc.collect()

    report = {
        "benchmark": "compiler_backends", "preset": args.preset, "size": args.size,
        "batch": int(ctx.example.sample.shape[0]), "metric": metric.name,
        "metric_drop_ths": args.ths, "rounds": args.rounds,
        "rows": list(rows.values()),
        "prepare_s": {"build_preset": build_preset_s, "collect_samples": collect_s},
        "environment": {
            "device": device.fingerprint(), "libraries": library_versions(),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
        },
        "search": None, "unix_time": int(time.time()),
    }
    write_json(args.out, report)  # the side-by-side part survives a failing search

    if args.search_backends:
        t0 = time.perf_counter()
        optimized = sdopt.optimize_model(
            pipe, PROMPTS, metric_drop_ths=args.ths, height=args.size, width=args.size,
            num_inference_steps=args.steps, backends=args.search_backends.split(","))
        result = optimized.sdopt_result
        report["search"] = result.to_dict()
        report["search"]["optimize_model_s"] = time.perf_counter() - t0
        best_new = max((r for r in rows.values() if r.get("status") == "ok"
                        and r.get("metric_drop", 1) <= args.ths and r["id"] != "torch_eager/fp32"),
                       key=lambda r: r["speedup_vs_fp32_eager"], default=None)
        report["goal"] = {"text": f"best constrained UNet candidate >= {GOAL}x fp32 eager within "
                                  f"metric_drop_ths={args.ths}",
                          "best": best_new and best_new["id"],
                          "speedup": best_new and best_new["speedup_vs_fp32_eager"],
                          "met": bool(best_new and best_new["speedup_vs_fp32_eager"] >= GOAL),
                          "search_selected": result.selected.id,
                          "search_speedup": result.speedup}
        write_json(args.out, report)
        print(f"optimize_model picked {result.selected.id}: {result.speedup:.2f}x, drop "
              f"{result.selected.metric_drop:.4f}", flush=True)
    print(f"written to {args.out}")
    return 0


def _time_against(reference, module, row: dict, ref_row: dict, inputs, rounds: int) -> None:
    """``rounds`` alternating calls of the reference and the candidate (order flipped each
    round), after two warm-up calls each; the ratio is computed from these pairs only."""
    base, cand = [], []
    with torch.inference_mode():
        for m in (reference, module, reference, module):
            m(inputs[0].sample, inputs[0].timestep, inputs[0].encoder_hidden_states)
        for r in range(rounds):
            inp = inputs[r % len(inputs)]
            pair = (reference, module) if r % 2 == 0 else (module, reference)
            for m in pair:
                t = time.perf_counter()
                m(inp.sample, inp.timestep, inp.encoder_hidden_states)
                (base if m is reference else cand).append(time.perf_counter() - t)
    ref_row.setdefault("latency_samples_s", []).extend(base)
    row.update(latency_median_s=statistics.median(cand), latency_samples_s=cand,
               fp32_eager_median_s=statistics.median(base), fp32_eager_samples_s=base,
               speedup_vs_fp32_eager=statistics.median(base) / statistics.median(cand),
               speedup_median_paired=statistics.median(b / x for b, x in zip(base, cand)))


def _hits(info: dict) -> str:
    parts = [f"{k} {'hit' if v.get('hit') else 'miss'}" for k, v in info.items()
             if isinstance(v, dict) and "hit" in v]
    return ", ".join(parts) or "none"


if __name__ == "__main__":
    sys.exit(main())
