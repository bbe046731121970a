"""Cold search time, ordered and bounded (default) against exhaustive, and the two picks timed
side by side.

Each search runs as ``sdopt demo`` in its own process with an empty sdopt cache and an empty
torch.compile cache (what a CI runner without a warm cache pays), one after another, never two
at once. Then both saved picks are loaded into one pipeline and their UNets timed in alternation
on the same inputs: the ordered search must pick a candidate at least as fast as the exhaustive
one's. Writes the search times, the picks, the paired ratio and the CPU kind.

    python benchmarks/search_cold.py --preset tiny
    python benchmarks/search_cold.py --preset sd15 --size 256
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py

MODES = {"ordered": [], "exhaustive": ["--exhaustive"]}
# The picks are compared on these (the UNet calls are captured from the first).
PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a lighthouse at dusk"]


def cpu_kind() -> dict:
    """The CPU's vendor family and model (Zen 4 and Zen 5 differ 2x per cycle in AVX-512)."""
    out = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model", "model name") and key not in out:
                out[key] = value.strip()
    except OSError:
        pass
    return out


def run_demo(preset: str, size: int, mode: str, work: Path, keep: bool = False,
             steps: int = 4) -> dict:
    cache, inductor, out = work / f"cache-{mode}", work / f"inductor-{mode}", work / f"out-{mode}"
    cache.mkdir()
    inductor.mkdir()
    env = {**os.environ, "SDOPT_CACHE": str(cache), "TORCHINDUCTOR_CACHE_DIR": str(inductor),
           "COLUMNS": "220"}
    sized = ["--size", str(size)] if size else []
    cmd = [sys.executable, "-m", "sdopt.cli", "demo", "--preset", preset, *sized,
           "--steps", str(steps), "--out", str(out), "--fresh-search", *MODES[mode]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / f"demo-{mode}.log").write_text(proc.stdout + proc.stderr)
    if not keep:
        # The next search needs the room: sd15's exhaustive cache alone is 12 GB, and with the
        # ordered run's still there the disk filled while the exhaustive pick was saved.
        for path in (cache, inductor):
            shutil.rmtree(path, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"sdopt demo ({mode}) failed, exit {proc.returncode}:\n"
                         f"{proc.stderr[-3000:]}")
    result = json.loads((out / "optimization.json").read_text())
    built = [c for c in result["candidates"] if c.get("build_s") is not None]
    return {"process_wall_s": wall, "search_wall_s": result["wall_s"],
            "selected": result["selected"]["id"], "speedup": result["speedup"],
            "speedup_source": result.get("speedup_source"),
            "candidates": len(result["candidates"]), "built": len(built),
            "bounded_out": [c["id"] for c in result["candidates"]
                            if "cannot beat" in (c.get("reason") or "")],
            "build_s_total": sum(c["build_s"] for c in built), "out": str(out),
            "table": [{k: c.get(k) for k in ("id", "status", "build_s", "latency_s", "speedup",
                                             "reason")} for c in result["candidates"]]}


def paired_picks(preset: str, size: int, outs: dict[str, str], rounds: int,
                 steps: int) -> dict:
    """The two saved picks, alternating: their UNets on the same captured inputs, then their
    whole pipelines per image (a pick is a UNet and the component settings that go with it,
    such as an OpenVINO VAE decoder, so the UNets alone do not rank them)."""
    import torch

    import sdopt
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.paired import interleave
    from sdopt.optimize.search import cycling_call

    pipe = sdopt.build_preset(preset)
    from sdopt.cli.optimize import DEMO_SIZE
    from sdopt.models import PRESETS

    size = size or min(DEMO_SIZE, PRESETS[preset].default_size)
    inputs = collect_samples(pipe, PROMPTS[:1],
                             height=size, width=size, steps=3, guidance_scale=7.5,
                             seed=0).samples
    from sdopt.optimize.endtoend import EndToEnd

    pipes, modules = {}, {}
    for mode, out in outs.items():
        pipes[mode] = sdopt.load_model(out, pipe=sdopt.build_preset(preset))
        modules[mode] = pipes[mode].unet.module

    calls = [s.inputs for s in inputs]
    with torch.inference_mode():
        measured = interleave({m: cycling_call(mod, calls) for m, mod in modules.items()},
                              rounds=rounds, warmup=1)
    ratio = measured.ratio("ordered", "exhaustive")  # > 1: the ordered pick is faster
    # Per image: the demo's size and steps, the prompts in turn, half the rounds (at least 3).
    e2e = EndToEnd(PROMPTS, size, size, steps)
    with torch.inference_mode():
        images = interleave({m: (lambda i, p=p: e2e.generate(p, i % len(PROMPTS)))
                             for m, p in pipes.items()},
                            rounds=max(3, rounds // 2), warmup=1)
    per_image = images.ratio("ordered", "exhaustive")
    return {"ordered_over_exhaustive_speed": ratio.speedup, "q1": ratio.q1, "q3": ratio.q3,
            "rounds": ratio.rounds,
            "median_s": {m: statistics.median(s) for m, s in measured.samples_s.items()},
            "samples_s": measured.samples_s,
            "per_image": {"ordered_over_exhaustive_speed": per_image.speedup,
                          "q1": per_image.q1, "q3": per_image.q3, "rounds": per_image.rounds,
                          "steps": steps,
                          "median_s": {m: statistics.median(s)
                                       for m, s in images.samples_s.items()},
                          "samples_s": images.samples_s}}


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "search_cold.json", steps=4, rounds=10,
                               rounds_help="A/B rounds of the two picks", ths=None,
                               device=False)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated searches to run (ordered, exhaustive); with one, "
                             "no pairing of the picks")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep each search's caches and saved pick (10-25 GB for sd15) in "
                             "the work folder; by default only the demo logs stay")
    parser.set_defaults(size=0)  # 0: the demo's own default for the preset
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes {args.modes!r}: expected a comma-separated subset of "
                     f"{', '.join(MODES)}")
    out_path = Path(args.out)
    if out_path.name == "search_cold.json":
        suffix = "" if len(modes) == len(MODES) else "_" + "_".join(modes)
        out_path = out_path.with_name(f"search_cold_{args.preset}{suffix}.json")
    work = Path(tempfile.mkdtemp(prefix="sdopt-search-cold-"))
    runs = {}
    for mode in modes:
        print(f"{args.preset} {args.size}px, {mode} search (cold caches) ...", flush=True)
        runs[mode] = run_demo(args.preset, args.size, mode, work, keep=args.keep_work,
                              steps=args.steps)
        r = runs[mode]
        print(f"  {r['search_wall_s']:.0f} s search ({r['process_wall_s']:.0f} s process), "
              f"built {r['built']} of {r['candidates']}, picked {r['selected']} "
              f"{r['speedup']:.2f}x ({r['speedup_source']})", flush=True)
    both = len(runs) == len(MODES)
    same = runs["ordered"]["selected"] == runs["exhaustive"]["selected"] if both else None
    pair = paired_picks(args.preset, args.size, {m: runs[m]["out"] for m in MODES},
                        args.rounds, args.steps) if both else None
    import sdopt
    from sdopt.device import detect, library_versions
    from sdopt.store import write_json

    report = {
        "benchmark": "search_cold", "preset": args.preset, "size": args.size,
        "runs": runs, "same_pick": same, "picks_side_by_side": pair,
        "search_time_ratio": runs["exhaustive"]["search_wall_s"]
        / runs["ordered"]["search_wall_s"] if both else None,
        "environment": {"cpu": cpu_kind(), "device": detect("cpu").fingerprint(),
                        "libraries": library_versions(), "sdopt": sdopt.__version__,
                        "malloc_env": {k: v for k, v in os.environ.items()
                                       if k.startswith("MALLOC_")}},
        "unix_time": int(time.time()),
    }
    write_json(out_path, report)
    if not args.keep_work:
        # The saved picks (the caches went after each search): sd15's are ~1 GB each.
        for path in work.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
        print(f"work folder {work}: logs kept, caches and saved picks removed (--keep-work "
              "keeps them)")
    if not both:
        print(f"written to {out_path}")
        return 0
    print(f"ordered {runs['ordered']['search_wall_s']:.0f} s vs exhaustive "
          f"{runs['exhaustive']['search_wall_s']:.0f} s "
          f"({report['search_time_ratio']:.1f}x less time); picks "
          f"{runs['ordered']['selected']} vs {runs['exhaustive']['selected']}: ordered pick "
          f"{pair['ordered_over_exhaustive_speed']:.2f}x the exhaustive pick's speed, paired "
          f"(IQR {pair['q1']:.2f}-{pair['q3']:.2f}) per UNet call, "
          f"{pair['per_image']['ordered_over_exhaustive_speed']:.2f}x per image "
          f"(IQR {pair['per_image']['q1']:.2f}-{pair['per_image']['q3']:.2f}); "
          f"written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
