"""How much memory each CPU candidate's build and calls add, in copies of the fp32 weights (#18).

The search on the SDXL architecture at 512 px (10.3 GB UNet, 13.5 GiB pipeline) stalled this
24 GiB machine in OpenVINO's min/max statistics pass: the fp32 statistics model took the process
from 14.8 GiB to 23.3 GiB and the kernel had nothing left to reclaim. The search now skips a
candidate whose measured need exceeds the memory available (``Backend.memory_copies``), so the
figures come from here: the tiny preset's UNet widened (``--scale 12``: 800 MB of weights, where
the weights dominate what does not scale), one process per candidate, from its build (export,
conversion, calibration included) through its first calls on the held-out inputs.

Two figures per candidate, both above the RSS before the build:
- anonymous memory (``RssAnon``, sampled every 10 ms): what the kernel cannot reclaim, the one the
  search checks against the available memory (MemAvailable counts reclaimable page cache);
- the RSS high-water mark (``VmHWM``), which also counts the IR or ONNX file's mapped pages.

    .venv/bin/python benchmarks/candidate_memory.py --scale 12 \
        --out benchmarks/results/candidate_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VARIANTS = ("openvino/fp32", "openvino/bf16", "openvino/int8-minmax", "onnxruntime/fp32",
            "onnxruntime/int8-dynamic", "onnxruntime/int8-static", "torch_eager/bf16",
            "torch_eager/fp32-channels_last", "torch_eager/bf16-channels_last",
            "torch_int8/dynamic-linear", "openvino/int8", "openvino/int8-weights")
# The min/max statistics pass in bf16, as the search runs it when the fp32 pass does not fit.
BF16_STATISTICS = "openvino/int8-minmax+bf16-statistics"
# Token merging on OpenVINO picks (#20): what converting the merged UNet for one latent size and
# calling it adds on top of the pick (``Technique.memory_copies``), measured after the pick's own.
TOKEN_MERGE = "+token_merge-0.5"
TECHNIQUE_ROWS = tuple(v + TOKEN_MERGE for v in ("openvino/int8-inner-minmax", "openvino/bf16",
                                                  "openvino/fp32"))


def measure(variant_id: str, scale: int) -> dict:
    import ctypes
    import gc
    import tempfile
    import time
    import warnings

    import torch
    from diffusers import UNet2DConditionModel

    import sdopt
    from sdopt.backends import load_builtin_backends
    from sdopt.backends.base import BuildContext
    from sdopt.device import detect
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.memory import PeakRss, current_rss
    from sdopt.backends import get_backend
    from sdopt.optimize.search import plan_candidates

    warnings.simplefilter("ignore")
    load_builtin_backends()
    bf16_statistics = variant_id == BF16_STATISTICS
    variant_id, merged, _ = variant_id.partition(TOKEN_MERGE)
    if bf16_statistics:
        import sdopt.backends.openvino as openvino

        openvino.available_memory_bytes = lambda: 1  # the fp32 statistics pass "does not fit"
        variant_id = "openvino/int8-minmax"
    pipe = sdopt.build_preset("tiny")
    config = dict(pipe.unet.config)
    config["block_out_channels"] = [c * scale for c in config["block_out_channels"]]
    torch.manual_seed(0)
    pipe.unet = UNet2DConditionModel.from_config(config).eval()
    weights = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    samples = collect_samples(pipe, ["a cat", "a dog"], height=64, width=64, steps=4,
                              guidance_scale=7.5, seed=0, n_verify=4)
    device = detect("cpu")
    variant = {v.id: v for v in plan_candidates(device)}[variant_id]
    ctx = BuildContext(device=device, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration],
                       calibration_ranges=samples.calibration_ranges(),  # as the search builds
                       cache_dir=Path(tempfile.mkdtemp()))
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.malloc_trim(0)

    start = current_rss()
    with AnonPeak() as anon_peak, PeakRss() as span:
        t0 = time.perf_counter()
        with torch.inference_mode():
            module = get_backend(variant.backend).build(pipe.unet, variant, ctx)
            build_s = time.perf_counter() - t0  # as the search's, first call aside
            for s in samples.verification:
                i = s.inputs
                module(i.sample, i.timestep, i.encoder_hidden_states, **i.extra)
    gc.collect()
    libc.malloc_trim(0)
    row = {"id": variant.id, "bf16_statistics": bf16_statistics, "weights_bytes": weights,
           "anon_peak_copies": anon_peak.added / weights,
           "anon_kept_copies": (anon() - anon_peak.start) / weights,
           "rss_peak_copies": (span.peak - start) / weights,
           "rss_kept_copies": (current_rss() - start) / weights, "build_s": build_s}
    if merged:
        row.update(id=variant.id + merged,
                   **_technique_copies(module, pipe.unet, samples, weights, libc))
    return row


def _technique_copies(module, unet, samples, weights: int, libc) -> dict:
    """Token merging applied to the built pick and called on the held-out inputs: what it adds
    above the pick."""
    import time

    import torch

    from sdopt.techniques import token_merge

    t0 = time.perf_counter()
    with AnonPeak() as peak, torch.inference_mode():
        merged = token_merge.apply(module, {"ratio": 0.5}, unet)
        for s in samples.verification:
            i = s.inputs
            merged(i.sample, i.timestep, i.encoder_hidden_states, **i.extra)
    libc.malloc_trim(0)
    return {"technique_s": time.perf_counter() - t0,
            "technique_anon_peak_copies": peak.added / weights,
            "technique_anon_kept_copies": (anon() - peak.start) / weights}


def anon() -> int:
    """Anonymous memory of this process (``RssAnon``): what the kernel cannot reclaim."""
    import re

    text = Path("/proc/self/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+)", text).group(1)) * 1024


class AnonPeak:
    """The peak of :func:`anon` while open, sampled every 10 ms on a thread."""

    def __enter__(self) -> "AnonPeak":
        import threading

        self.start = self.peak = anon()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        import time

        while not self._stop.is_set():
            self.peak = max(self.peak, anon())
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.peak = max(self.peak, anon())

    @property
    def added(self) -> int:
        return self.peak - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=12)
    parser.add_argument("--variants", nargs="+",
                        default=[*VARIANTS, BF16_STATISTICS, *TECHNIQUE_ROWS])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # one candidate per process: no allocator state carried over
        print(json.dumps(measure(args.one, args.scale)))
        return
    rows = []
    for variant_id in args.variants:
        proc = subprocess.run([sys.executable, __file__, "--one", variant_id, "--scale",
                               str(args.scale)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode:
            rows.append({"id": variant_id, "failed": proc.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    from search_cold import cpu_kind  # this folder: scripts run as python benchmarks/NAME.py

    document = {"what": __doc__.splitlines()[0], "scale": args.scale, "cpu": cpu_kind(),
                "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
