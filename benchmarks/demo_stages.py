"""Where a cold ``sdopt demo`` search spends its time: each stage and build step, timestamped.

Runs ``sdopt demo`` in this process (the CLI's own process settings included) with an empty
sdopt cache and torch.compile cache, wrapping the search's stages (capture, UNet candidates,
component settings, side-by-side rounds) and OpenVINO's conversions, compiles and writes (the
rest of a build is the time between them), and prints each with its seconds since the start.
Writes the lines, the search's wall time and pick, and the CPU kind.

    python benchmarks/demo_stages.py --preset sd15 --size 256
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
from search_cold import cpu_kind

T0 = time.perf_counter()
LINES: list[dict] = []


def log(what: str, seconds: float | None = None) -> None:
    at = time.perf_counter() - T0
    LINES.append({"at_s": round(at, 2), "what": what,
                  **({"seconds": round(seconds, 2)} if seconds is not None else {})})
    print(f"[{at:7.1f}] {what}" + (f" {seconds:.1f} s" if seconds is not None else ""),
          file=sys.stderr, flush=True)


def timed(owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that logs its start and its seconds."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        log(f"> {label}")
        try:
            return inner(*args, **kwargs)
        finally:
            log(f"< {label}", time.perf_counter() - started)
    setattr(owner, name, wrapper)


def instrument() -> None:
    import openvino as ov

    import sdopt.backends.openvino as backend
    import sdopt.optimize.runner as runner

    for name in ("capture", "backends", "techniques", "time_setting", "confirm_end_to_end"):
        timed(runner.Search, name, f"Search.{name}")
    for name in ("convert_unet", "write_ir"):
        timed(backend, name, f"openvino.{name}")
    line = runner.candidate_line
    runner.candidate_line = lambda variant, phase: (log(f"candidate {variant.id} {phase}"),
                                                    line(variant, phase))[1]
    compile_model = ov.Core.compile_model

    def compile_logged(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return compile_model(self, *args, **kwargs)
        finally:
            log("openvino compile_model", time.perf_counter() - started)
    ov.Core.compile_model = compile_logged
    save_model = ov.save_model

    def save_logged(*args, **kwargs):
        started = time.perf_counter()
        try:
            return save_model(*args, **kwargs)
        finally:
            log(f"openvino save_model {Path(str(args[1])).parent.parent.name}",
                time.perf_counter() - started)
    ov.save_model = save_logged


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "demo_stages.json", steps=4, rounds=0,
                               rounds_help="unused", ths=None, device=False)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sdopt-demo-stages-"))
    os.environ["SDOPT_CACHE"] = str(work / "cache")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    instrument()
    from sdopt.cli import main as cli

    out = work / "out"
    try:
        cli(["demo", "--preset", args.preset, "--size", str(args.size), "--steps",
             str(args.steps), "--out", str(out), "--fresh-search"], standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    result = json.loads((out / "optimization.json").read_text())
    shutil.rmtree(work, ignore_errors=True)  # sd15's cache is gigabytes
    record = {"preset": args.preset, "size": args.size, "steps": args.steps,
              "cpu": cpu_kind(), "search_wall_s": result["wall_s"],
              "selected": result["selected"]["id"], "speedup": result["speedup"],
              "paired": result["selected"].get("paired"), "stages": LINES}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"search {result['wall_s']:.1f} s, {result['selected']['id']} "
          f"{result['speedup']:.2f}x; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
