"""This CPU's arithmetic limits: the clock it really runs at and the peak of each precision.

The clock in /proc/cpuinfo is the nominal one (2.6 GHz on this EPYC); under load the core boosts,
so a peak computed from it would be too low and every "fraction of peak" too flattering. The clock
is therefore measured: a chain of dependent integer adds retires one add per cycle on any x86
core, so adds / seconds is the clock. Needs a C compiler; without one the nominal clock is used
and the result says so.

Peak = cores x GHz x flops per cycle per core. Zen 4 executes AVX-512 on two 256-bit FMA pipes
(512-bit instructions are double-pumped), so per cycle and core:
- fp32 FMA: 2 pipes x 8 lanes x 2 flops = 32;
- bf16 dot product (VDPBF16PS): 2 pipes x 8 fp32 lanes x 2 bf16 pairs x 2 flops = 64;
- int8 VNNI (VPDPBUSD): 2 pipes x 8 int32 lanes x 4 u8*s8 pairs x 2 ops = 128.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLOPS_PER_CYCLE = {"fp32": 32, "bf16": 64, "int8": 128}
FORMULA = ("peak = cores x GHz x flops/cycle/core; Zen 4 AVX-512 is double-pumped on two 256-bit "
           "pipes: fp32 FMA 32, bf16 VDPBF16PS 64, int8 VNNI VPDPBUSD 128 per cycle per core")

# Register-register adds: Intel's Golden Cove and later fold dependent adds of an immediate at
# rename, so an `add $1` chain measured 11.4 GHz on a family 6 model 207 Xeon (2026-12-01).
_LOOP_C = r"""
#include <stdint.h>
uint64_t dep_adds(uint64_t n) {
    uint64_t x = 1;
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\t"
                         "add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0" : "+r"(x));
    }
    return x;
}
"""
ADDS_PER_ITERATION = 8


def nominal_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000.0
    except OSError:
        pass
    return None


def measure_ghz(iterations: int = 200_000_000, repeats: int = 5) -> float | None:
    """Effective clock of one core in GHz (best of ``repeats``), or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = Path(tmp) / "loop.c", Path(tmp) / "loop.so"
        src.write_text(_LOOP_C)
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True,
                       capture_output=True)
        fn = ctypes.CDLL(str(lib)).dep_adds
        fn.argtypes, fn.restype = [ctypes.c_uint64], ctypes.c_uint64
        fn(iterations // 10)  # let the core leave its idle clock
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(iterations)
            best = max(best, iterations * ADDS_PER_ITERATION / (time.perf_counter() - t0))
    return best / 1e9


def cores() -> int:
    return len(os.sched_getaffinity(0))


def peaks(ghz: float, n_cores: int) -> dict[str, float]:
    """Peak GFLOP/s (GOP/s for int8) of each precision."""
    return {p: n_cores * ghz * f for p, f in FLOPS_PER_CYCLE.items()}


GEMM_SIDE = 2048


def attainable_gemm(side: int = GEMM_SIDE, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s) that one large square GEMM reaches here per precision, both cores: what
    the kernels we depend on attain when nothing else is in the way, the practical ceiling
    between the datasheet peak and the UNet. The best of ``torch.matmul`` (oneDNN) and an
    OpenVINO MatMul for fp32/bf16; int8 is OpenVINO's (a FakeQuantize'd activation times int8
    weights, the pattern NNCF produces, run as a u8 x s8 VNNI GEMM). torch's dynamically quantized
    Linear is no ceiling: it reached 183 GOP/s here, a third of OpenVINO's."""
    import numpy as np
    import torch

    out = {}
    torch.manual_seed(0)
    a, b = torch.randn(side, side), torch.randn(side, side)
    with torch.inference_mode():
        for precision, (x, y) in (("fp32", (a, b)), ("bf16", (a.bfloat16(), b.bfloat16()))):
            torch.matmul(x, y)
            out[precision] = _rate(side, min(_timed(lambda: torch.matmul(x, y))
                                             for _ in range(repeats)))
    try:
        import openvino as ov
    except ImportError:
        return out
    core = ov.Core()
    x = np.random.default_rng(1).standard_normal((side, side)).astype(np.float32)
    for precision, hint in (("fp32", "f32"), ("bf16", "bf16"), ("int8", "bf16")):
        request = core.compile_model(_ov_gemm(side, precision), "CPU",
                                     {"INFERENCE_PRECISION_HINT": hint}).create_infer_request()
        request.infer({0: x})
        rate = _rate(side, min(_timed(lambda: request.infer({0: x})) for _ in range(repeats)))
        out[precision] = max(out.get(precision, 0.0), rate)
    return out


def _ov_gemm(side: int, precision: str):
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([side, side], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((side, side)).astype(np.float32)
    if precision == "int8":
        lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
        weights = ops.multiply(ops.convert(ops.constant(
            np.clip(np.round(w * 32), -127, 127).astype(np.int8)), np.float32),
            ops.constant(np.float32(1 / 32)))
        y = ops.matmul(ops.fake_quantize(x, lo, hi, lo, hi, 256), weights, False, True)
    else:
        y = ops.matmul(x, ops.constant(w), False, True)
    return ov.Model([y], [x])


def _rate(side: int, seconds: float) -> float:
    return 2 * side ** 3 / seconds / 1e9


def _timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def machine_limits() -> dict:
    measured = measure_ghz()
    nominal = nominal_ghz()
    ghz = measured or nominal
    source = ("measured: dependent integer add chain, 1 add/cycle" if measured else
              "nominal /proc/cpuinfo clock (no C compiler to measure the effective one)")
    n = cores()
    return {"cores": n, "ghz": ghz, "ghz_source": source, "nominal_ghz": nominal,
            "flops_per_cycle_per_core": dict(FLOPS_PER_CYCLE), "formula": FORMULA,
            "peak_gflops": peaks(ghz, n) if ghz else {},
            "attainable_gemm_gflops": attainable_gemm(), "gemm_side": GEMM_SIDE}


def fraction_of_peak(gflop: float, seconds: float, precision: str, limits: dict,
                     of: str = "peak_gflops") -> float | None:
    """Achieved rate over the datasheet peak (``of="attainable_gemm_gflops"``: over a large
    GEMM's rate in that precision)."""
    peak = limits.get(of, {}).get(precision)
    if not peak or not seconds:
        return None
    return gflop / seconds / peak
