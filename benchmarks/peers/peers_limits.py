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

_LOOP_C = r"""
#include <stdint.h>
uint64_t dep_adds(uint64_t n) {
    uint64_t x = 0;
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
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


def machine_limits() -> dict:
    measured = measure_ghz()
    nominal = nominal_ghz()
    ghz = measured or nominal
    source = ("measured: dependent integer add chain, 1 add/cycle" if measured else
              "nominal /proc/cpuinfo clock (no C compiler to measure the effective one)")
    n = cores()
    return {"cores": n, "ghz": ghz, "ghz_source": source, "nominal_ghz": nominal,
            "flops_per_cycle_per_core": dict(FLOPS_PER_CYCLE), "formula": FORMULA,
            "peak_gflops": peaks(ghz, n) if ghz else {}}


def fraction_of_peak(gflop: float, seconds: float, precision: str, limits: dict) -> float | None:
    peak = limits.get("peak_gflops", {}).get(precision)
    if not peak or not seconds:
        return None
    return gflop / seconds / peak
