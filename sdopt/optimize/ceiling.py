"""What this machine can do at most: the work in one denoiser call and a large GEMM's rate.

A candidate of a given precision cannot run a call faster than its arithmetic at the best rate the
hardware reaches for that precision; the rate is measured here, on the machine present (a CPU's
per-cycle rate differs between generations of the same vendor by 2x), not read from a table.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# What kind of layer an aten op torch's FlopCounterMode counts comes from: nn.Linear is addmm
# (mm without a bias: to_q/to_k/to_v), attention is bmm/baddbmm or a fused SDPA kernel (the CPU's
# SDPA has no FLOP formula in torch 2.13: uncounted, which only loosens a bound).
OP_KINDS = {"convolution": "convolution", "addmm": "linear", "mm": "linear",
            "bmm": "attention", "baddbmm": "attention"}


def count_flops(call: Callable[[], object]) -> int:
    """Floating-point operations of one ``call()`` (convolutions, matmuls, attention), counted
    by torch's own FlopCounterMode on a real call."""
    return sum(count_flops_by_kind(call).values())


def count_flops_by_kind(call: Callable[[], object]) -> dict[str, int]:
    """:func:`count_flops` per kind of layer (``OP_KINDS``; "other" for the rest): what a
    variant that quantizes some layers only leaves in floating point."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        call()
    kinds: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[-1]
        if name.startswith("_scaled_dot_product"):
            kind = "attention"
        else:
            kind = OP_KINDS.get(name, "other")
        kinds[kind] = kinds.get(kind, 0) + int(flops)
    return kinds


def gemm_rate(precision: str, device: str = "cpu", *, side: int | None = None,
              repeats: int = 3) -> float | None:
    """FLOP/s of a large square matmul in ``precision`` on ``device`` (the best of a few), or
    None where torch has no such GEMM (int8 on most builds). Takes well under a second."""
    dtype = _DTYPES.get(precision)
    if dtype is None:
        return None
    side = side or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    with torch.inference_mode():
        torch.mm(a, b)  # first call: library dispatch, packing, clocks
        sync()
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * side ** 3 / best
