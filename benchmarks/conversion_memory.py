"""How many extra copies of the fp32 denoiser weights the conversions hold at once (#18, Memory).

For each conversion (OpenVINO's convert_model + save, ONNX export with the dynamo and the legacy
TorchScript exporter), the process's peak RSS above its RSS at the start is measured
(sdopt.optimize.memory.PeakRss: the kernel's exact high-water mark) on the tiny preset's UNet and
on the same architecture with wider channels (``--scales 1 6``: 5.4 MB and 191 MB of weights). The
slope of the peak over the weights' size is the number of transient weight copies a conversion
holds; the intercept is what does not scale with the weights (tracing, graph objects). The
conversion runs three times per size and the lowest of the last two counts (the first call loads
libraries). Also measured: what one conversion leaves allocated after it returns.

    .venv/bin/python benchmarks/conversion_memory.py --scales 1 6 \
        --out benchmarks/results/conversion_memory_tiny.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

JOBS = ("openvino.convert_model", "onnx dynamo", "onnx legacy")


def measure(scale: int) -> dict:
    import sdopt
    from diffusers import UNet2DConditionModel

    from sdopt.backends.export import export_unet
    from sdopt.backends.openvino import convert_unet, write_ir
    from sdopt.optimize.capture import example_inputs
    from sdopt.optimize.memory import PeakRss, current_rss

    pipe = sdopt.build_preset("tiny")
    example = example_inputs(pipe, 64, 64)
    config = dict(pipe.unet.config)
    config["block_out_channels"] = [c * scale for c in config["block_out_channels"]]
    unet = UNet2DConditionModel.from_config(config).eval()
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    # a conversion and its IR written every time (the backend keeps one per UNet in memory)
    jobs = {"openvino.convert_model": lambda d: write_ir(convert_unet(unet, example), Path(d)),
            "onnx dynamo": lambda d: export_unet(unet, example, d, exporters=("dynamo",)),
            "onnx legacy": lambda d: export_unet(unet, example, d, exporters=("legacy",))}
    out = {"scale": scale, "weights_bytes": weights, "peak_above_start_bytes": {},
           "left_after_bytes": {}}
    for name, job in jobs.items():
        peaks, left = [], []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as directory:
                gc.collect()
                if libc:
                    libc.malloc_trim(0)
                start = current_rss()
                with PeakRss() as span:
                    job(directory)
            gc.collect()
            if libc:
                libc.malloc_trim(0)
            peaks.append(span.peak - start)
            left.append(current_rss() - start)
        out["peak_above_start_bytes"][name] = min(peaks[1:])
        out["left_after_bytes"][name] = min(left[1:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # one size per process: no allocator state carried over
        print(json.dumps(measure(args.one)))
        return
    runs = []
    for scale in args.scales:
        proc = subprocess.run([sys.executable, __file__, "--one", str(scale)], check=True,
                              capture_output=True, text=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    low, high = runs[0], runs[-1]
    span = high["weights_bytes"] - low["weights_bytes"]
    copies = {name: (high["peak_above_start_bytes"][name] - low["peak_above_start_bytes"][name])
              / span for name in JOBS} if span else {}
    document = {"what": __doc__.splitlines()[0], "python": platform.python_version(),
                "runs": runs, "transient_weight_copies": copies}
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
