"""Does an int8 VAE decoder pay on this CPU? OpenVINO's decoder in bf16 (or f32), and min/max int8
from data-free calibration, side by side in one process against torch's fp32 decoder (#20).

The VAE decoder is 37% of the int8 pick's image on a CPU without bf16 units and a large share
on every CPU at 512 px. The int8 decoder here is a prototype: the fp32 IR that
``sdopt/techniques/vae_openvino.py`` converts (``post_quant_conv`` + ``decoder``) quantized by
``openvino_minmax_int8.quantize_minmax`` (convolution and MatMul inputs, per-channel int8 weights),
its ranges measured on ``--calibration`` latents drawn with a fixed seed at the latent scale
``N(0, 1) / scaling_factor``. Accuracy: PSNR of each decoder's image against torch fp32 on other
latents of that distribution (random weights: the figure says how far the int8 graph strays from
the fp32 one, not how a trained decoder's images look). A pipeline's own latents are another
matter: docs/benchmarks.md, "An int8 VAE decoder".

    python benchmarks/vae_int8.py --preset sd15 --size 512 --out benchmarks/results/vae_int8_sd15_512.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "vae_int8.json", steps=0, rounds=5,
                               rounds_help="timed rounds, each decoder once per round",
                               steps_help="unused", ths=None, device=False)
    parser.add_argument("--calibration", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="latents the PSNR is taken on")
    args = parser.parse_args(argv)
    import openvino as ov
    import torch

    import sdopt
    from sdopt.backends.openvino_minmax_int8 import quantize_minmax
    from sdopt.device import detect
    from sdopt.optimize.metrics import numeric_precision, psnr_db
    from sdopt.optimize.paired import interleave, quartiles
    from sdopt.techniques import vae_openvino
    from sdopt.techniques.openvino_graph import CompiledGraph

    torch.manual_seed(0)
    pipe = sdopt.build_preset(args.preset)
    vae = pipe.vae.eval()
    channels, factor = vae.config.latent_channels, vae.config.scaling_factor
    side = args.size // (2 ** (len(vae.config.block_out_channels) - 1))
    bf16 = detect().precision_unavailable_reason("bf16") is None
    float_precision = "bf16" if bf16 else "fp32"
    ov_vae = vae_openvino.openvino_decoder_vae(vae, float_precision)
    fp32_ir = ov_vae.decoder.graph._graph.model
    generator = torch.Generator().manual_seed(1234)

    def latents(n):
        return [torch.randn(1, channels, side, side, generator=generator) / factor
                for _ in range(n)]

    calibration, held_out = latents(args.calibration), latents(args.samples)
    name = fp32_ir.inputs[0].get_any_name()
    work = Path(tempfile.mkdtemp(prefix="sdopt-vae-int8-"))
    info = quantize_minmax(fp32_ir, [{name: z.numpy()} for z in calibration], work / "int8.xml")
    int8_ir = ov.Core().read_model(str(work / "int8.xml"))
    int8_graph = CompiledGraph(int8_ir, float_precision)  # its float ops in that precision
    decoders = {
        "torch_fp32": lambda z: vae.decode(z, return_dict=False)[0],
        f"openvino_{float_precision}": lambda z: ov_vae.decode(z, return_dict=False)[0],
        f"openvino_int8_{float_precision}_inner": lambda z: int8_graph(z)[0],
    }
    with torch.inference_mode():
        references = [decoders["torch_fp32"](z) for z in held_out]
        outputs = {k: [f(z) for z in held_out] for k, f in decoders.items() if k != "torch_fp32"}
    psnr = {k: [psnr_db(_image(r), _image(o)) for r, o in zip(references, outs)]
            for k, outs in outputs.items()}
    # The decoder's raw output too: a saturated random-weight image could hide an error.
    error = {k: [numeric_precision(r, o) for r, o in zip(references, outs)]
             for k, outs in outputs.items()}
    rounds = interleave({k: (lambda f: lambda i: f(held_out[i % len(held_out)]))(f)
                         for k, f in decoders.items()}, rounds=args.rounds)
    rows = {}
    for k, seconds in rounds.samples_s.items():
        ratio = [a / b for a, b in zip(rounds.samples_s["torch_fp32"], seconds)]
        q1, q3 = quartiles(ratio)
        rows[k] = {"median_s": statistics.median(seconds), "samples_s": seconds,
                   "speedup_vs_torch_fp32": statistics.median(ratio), "speedup_iqr": [q1, q3],
                   "psnr_db": psnr.get(k), "numeric_error": error.get(k)}
    float_s = rounds.samples_s[f"openvino_{float_precision}"]
    int8_s = rounds.samples_s[f"openvino_int8_{float_precision}_inner"]
    gain = [a / b for a, b in zip(float_s, int8_s)]
    record = {"what": __doc__.splitlines()[0], "preset": args.preset, "size": args.size,
              "cpu": cpu_kind(), "openvino": ov.get_version(), "quantization": info,
              "calibration_latents": args.calibration, "rows": rows,
              "int8_vs_float_openvino": {"median": statistics.median(gain),
                                         "iqr": list(quartiles(gain))}}
    for k, row in rows.items():
        shown = "" if row["psnr_db"] is None else \
            f", PSNR {min(row['psnr_db']):.1f}-{max(row['psnr_db']):.1f} dB"
        print(f"{k}: {row['median_s']:.2f} s per decode, {row['speedup_vs_torch_fp32']:.2f}x "
              f"torch fp32{shown}")
    print(f"int8 against OpenVINO {float_precision}: {statistics.median(gain):.2f}x (paired)")
    Path(args.out).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return 0


def _image(decoded):
    """The decoder's output as the pipeline's [0, 1] image (what the search's metric sees)."""
    return (decoded.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()


if __name__ == "__main__":
    sys.exit(main())
