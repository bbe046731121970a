"""Why optimum-intel's SDXL UNet is faster per call than sdopt's bf16 pick, side by side (#18).

The SDXL peers run at 512 px (results/peers_sdxl_512.json) had optimum-intel's pipeline at 163 s
per image and sdopt's constrained pick (``openvino/bf16``) at 191 s. optimum-intel compresses
the weights of submodels with >= 1e9 weights (the SDXL UNet) to int8, data-free; the CPU plugin
then quantizes each layer's activations per group of 32 as it runs
(``DYNAMIC_QUANTIZATION_GROUP_SIZE``, default 32), so the fully connected layers run int8
kernels. This script times, interleaved in one process, one UNet call (batch 2, the latent of
the given size) of:

- ``sdopt_bf16``: sdopt's saved IR with its bf16 hint;
- ``optimum_default``: optimum-intel's IR with its default config (``PERFORMANCE_HINT: LATENCY``);
- ``sdopt_int8_weights``: sdopt's IR compressed by ``sdopt.backends.openvino.int8_weights``
  (``nncf.compress_weights(INT8_ASYM)``, what the ``openvino/int8-weights`` variant builds),
  bf16 hint;
- ``optimum_no_dynquant``: optimum-intel's IR with the dynamic quantization off (group size 0);

and each output's relative L2 distance from ``sdopt_bf16``'s on the same inputs.

    .venv/bin/python benchmarks/openvino_int8_weights.py \\
        --sdopt-ir ~/.cache/sdopt-peers/sdxl/sdopt-constrained/unet/unet.xml \\
        --optimum-ir ~/.cache/sdopt-peers/sdxl/optimum-openvino/unet/openvino_model.xml \\
        --out benchmarks/results/openvino_int8_weights_sdxl_512.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "sdopt-peers" / "sdxl"


def feeds(model, size: int) -> dict[str, np.ndarray]:
    """The same seeded SDXL UNet inputs for every IR, by input name (the two exporters name the
    added conditions differently and give the timestep other types)."""
    import openvino as ov

    rng = np.random.default_rng(0)
    latent = size // 8
    out = {}
    for port in model.inputs:
        name = port.get_any_name()
        if name == "sample":
            out[name] = rng.standard_normal((2, 4, latent, latent)).astype(np.float32)
        elif name == "timestep":
            out[name] = (np.array([900], np.int64) if port.get_element_type() == ov.Type.i64
                         else np.array([900.0], np.float32))
        elif "encoder_hidden_states" in name:
            out[name] = rng.standard_normal((2, 77, 2048)).astype(np.float32)
        elif "text_embeds" in name:
            out[name] = rng.standard_normal((2, 1280)).astype(np.float32)
        elif "time_ids" in name:
            out[name] = np.tile(np.array([size, size, 0, 0, size, size], np.float32), (2, 1))
        else:
            raise SystemExit(f"unknown UNet input '{name}'")
    return out


def compress(sdopt_ir: Path, directory: Path) -> tuple[Path, float]:
    """sdopt's IR as the ``openvino/int8-weights`` variant compresses it, saved."""
    import openvino as ov

    from sdopt.backends.openvino import int8_weights

    t0 = time.perf_counter()
    model = int8_weights(ov.Core().read_model(str(sdopt_ir)))
    out = directory / "unet.xml"
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdopt-ir", type=Path,
                        default=CACHE / "sdopt-constrained" / "unet" / "unet.xml")
    parser.add_argument("--optimum-ir", type=Path,
                        default=CACHE / "optimum-openvino" / "unet" / "openvino_model.xml")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import openvino as ov

    from search_cold import cpu_kind  # this folder: scripts run as python benchmarks/NAME.py

    core = ov.Core()
    work = Path(tempfile.mkdtemp(prefix="sdopt-int8w-"))
    compressed, compress_s = compress(args.sdopt_ir, work)
    rows = [("sdopt_bf16", args.sdopt_ir, {"INFERENCE_PRECISION_HINT": "bf16"}),
            ("optimum_default", args.optimum_ir, {"PERFORMANCE_HINT": "LATENCY"}),
            ("sdopt_int8_weights", compressed, {"INFERENCE_PRECISION_HINT": "bf16"}),
            ("optimum_no_dynquant", args.optimum_ir,
             {"PERFORMANCE_HINT": "LATENCY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0})]
    runs, info = {}, {}
    for name, path, config in rows:
        model = core.read_model(str(path))
        inputs = feeds(model, args.size)
        model.reshape({k: list(v.shape) for k, v in inputs.items()})
        t0 = time.perf_counter()
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        request.infer(inputs)  # first call apart
        info[name] = {"ir": str(path), "config": config, "compile_s": time.perf_counter() - t0,
                      "dynamic_quantization_group_size":
                          int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")),
                      "inference_precision": str(compiled.get_property(
                          "INFERENCE_PRECISION_HINT"))}
        runs[name] = (request, inputs)
        print(name, info[name], flush=True)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, (request, inputs) in runs.items():
            t0 = time.perf_counter()
            request.infer(inputs)
            times[name].append(time.perf_counter() - t0)
        print(r, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    outputs = {k: r.get_output_tensor(0).data.copy() for k, (r, _) in runs.items()}
    ref = outputs["sdopt_bf16"]
    base = times["optimum_default"]
    result = {
        "benchmark": "openvino_int8_weights", "size": args.size, "batch": 2,
        "rounds": args.rounds, "cpu": cpu_kind(), "openvino": ov.get_version(),
        "compress_s": compress_s,
        "rows": {k: {**info[k], "call_s": v, "median_s": statistics.median(v),
                     "time_vs_optimum_default": statistics.median(
                         [a / b for a, b in zip(v, base)]),
                     "rel_l2_vs_sdopt_bf16": float(np.linalg.norm(outputs[k] - ref)
                                                   / np.linalg.norm(ref))}
                 for k, v in times.items()},
    }
    print(json.dumps({k: {"median_s": round(v["median_s"], 2),
                          "vs_optimum": round(v["time_vs_optimum_default"], 3),
                          "rel_l2": round(v["rel_l2_vs_sdopt_bf16"], 4)}
                      for k, v in result["rows"].items()}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
