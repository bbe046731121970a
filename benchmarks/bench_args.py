"""The arguments every benchmark script shares (preset, size, steps, rounds, threshold, device,
output file), defined once so that the scripts read alike and their defaults stay comparable."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str, out_name: str, *, steps: int, rounds: int, rounds_help: str,
           steps_help: str = "steps of the sample runs", ths: str | None = "",
           device: bool = True) -> argparse.ArgumentParser:
    """``ths=None`` leaves out --ths (a script with no quality threshold); ``device=False``
    leaves out --device (a CPU-only script)."""
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    out.add_argument("--preset", default="sd15")
    out.add_argument("--size", type=int, default=256)
    out.add_argument("--steps", type=int, default=steps, help=steps_help)
    out.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    if ths is not None:
        out.add_argument("--ths", type=float, default=0.05, help=ths or None)
    if device:
        out.add_argument("--device", default="cpu", help="cpu or cuda (where a GPU is lent)")
    out.add_argument("--out", default=str(RESULTS / out_name))
    return out
