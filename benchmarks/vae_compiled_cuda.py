"""The VAE decoder on CUDA, side by side in one process: fp32 eager, and the compiled fp16 and
bf16 decoders of ``vae_compiled`` (sd15 VAE architecture, random weights, one 512 px latent).
Why: on an H200 the search's sequential end-to-end rows put the bf16 decoder at 178 ms per
image against 201 ms with fp16 (2026-12-04), while the constrained search keeps the first that
pays (fp16). Rounds alternate the rows; the figure is the median per row and the median of
per-round ratios against fp32.

    python benchmarks/vae_compiled_cuda.py --out benchmarks/results/gpu/vae_compiled_cuda_512.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("vae_compiled_cuda.json"))
    args = parser.parse_args(argv)
    import sdopt
    from sdopt.techniques.vae_torch_compile import compiled_decoder_vae

    vae = sdopt.build_preset("sd15").vae.to("cuda").eval()
    z = torch.randn(1, vae.config.latent_channels, args.size // 8, args.size // 8, device="cuda")
    rows = {"fp32_eager": vae}
    build_s = {}
    for precision in ("fp16", "bf16"):
        t0 = time.perf_counter()
        rows[f"compiled_{precision}"] = compiled_decoder_vae(vae, precision)
        with torch.inference_mode():
            rows[f"compiled_{precision}"].decode(z)
        torch.cuda.synchronize()
        build_s[precision] = time.perf_counter() - t0
        print(f"compiled {precision} in {build_s[precision]:.1f} s", flush=True)
    times = {n: [] for n in rows}
    with torch.inference_mode():
        ref = vae.decode(z).sample.float()
        err = {n: float((m.decode(z).sample.float() - ref).abs().max()) for n, m in rows.items()}
        for r in range(args.rounds):
            names = list(rows)[r % len(rows):] + list(rows)[:r % len(rows)]
            for name in names:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                rows[name].decode(z)
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    out = {"size": args.size, "rounds": args.rounds, "build_s": build_s, "max_abs_err_vs_fp32": err,
           "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "median_ms": {n: statistics.median(t) * 1e3 for n, t in times.items()},
           "speedup_vs_fp32_paired": {n: statistics.median(
               a / b for a, b in zip(times["fp32_eager"], t)) for n, t in times.items()}}
    print(json.dumps(out, indent=1), flush=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
