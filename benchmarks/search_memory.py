"""The memory of a constrained search on a full-size architecture, stage by stage (#18).

The SDXL search stalled a 24 GiB machine in 2026-12-01's run (the min/max statistics model,
docs/benchmarks.md); the statistics pass is gone where the capture records the ranges. This runs
``optimize_model`` on a preset with the named backends (the UNet stage only: ``end_to_end=False``)
in this process, with the CLI's allocator settings and an empty cache, samples the process's
anonymous memory (``RssAnon``: what the kernel cannot reclaim) and the machine's ``MemAvailable``
every second, and timestamps the stages as ``demo_stages.py`` does. Writes the samples, the
stages, the peak and the candidates' rows.

    python benchmarks/search_memory.py --preset sdxl --size 512 --steps 2 \
        --backends openvino/int8-minmax --out benchmarks/results/search_memory_sdxl_512.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py
import demo_stages
from search_cold import cpu_kind

PROMPTS = ["a photo of a lighthouse at dusk", "a watercolor of a mountain village"]
GIB = 2**30


def memory_now() -> tuple[int, int]:
    """(the process's anonymous memory, the machine's available memory), in bytes."""
    anon = re.search(r"RssAnon:\s+(\d+)", Path("/proc/self/status").read_text())
    available = re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())
    return int(anon.group(1)) * 1024, int(available.group(1)) * 1024


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "search_memory.json", steps=2, rounds=0,
                               rounds_help="unused", ths=None, device=False)
    parser.add_argument("--backends", nargs="+", default=["openvino/int8-minmax"])
    parser.add_argument("--prompts", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sdopt-search-memory-"))
    os.environ["SDOPT_CACHE"] = str(work / "cache")
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            anon, available = memory_now()
            samples.append((round(time.perf_counter() - demo_stages.T0, 1),
                            round(anon / GIB, 2), round(available / GIB, 2)))
            stop.wait(1.0)

    threading.Thread(target=sample, daemon=True).start()
    import sdopt
    from sdopt.allocator import tune_allocator

    tune_allocator()  # as the CLI and the action run it
    demo_stages.instrument()
    demo_stages.log("> build_preset")
    pipe = sdopt.build_preset(args.preset)
    demo_stages.log("< build_preset")
    try:
        out = sdopt.optimize_model(pipe, PROMPTS[:args.prompts], metric_drop_ths=0.05,
                                   backends=args.backends, height=args.size, width=args.size,
                                   num_inference_steps=args.steps, n_verify=args.prompts,
                                   end_to_end=False, show=True)
    finally:
        stop.set()
        shutil.rmtree(work, ignore_errors=True)  # an SDXL IR is 10 GB
    result = out.sdopt_result
    peak = max(samples, key=lambda s: s[1])
    record = {"preset": args.preset, "size": args.size, "steps": args.steps,
              "backends": args.backends, "cpu": cpu_kind(),
              "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                     / GIB, 1),
              "search_wall_s": result.wall_s,
              "anon_peak_gib": peak[1], "anon_peak_at_s": peak[0],
              "available_min_gib": min(s[2] for s in samples),
              "candidates": [{"id": c.id, "status": c.status, "reason": c.reason,
                              "peak_rss_gib": c.peak_rss_bytes and round(c.peak_rss_bytes / GIB,
                                                                         2),
                              "speedup": c.speedup, "metric_drop_max": c.metric_drop_max}
                             for c in result.candidates],
              "stages": demo_stages.LINES, "samples_s_anon_available_gib": samples}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"search {result.wall_s:.0f} s; anonymous peak {peak[1]:.1f} GiB at {peak[0]:.0f} s; "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
