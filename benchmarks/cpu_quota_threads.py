"""Thread pools under a container's CPU quota: the runtimes' default (one thread per CPU of the
affinity) against sdopt's cap (the quota, rounded down), side by side per UNet call.

A Kubernetes CPU limit or ``docker run --cpus`` sets a CFS quota that torch, OpenVINO and ONNX
Runtime do not read (sdopt/cpu_threads.py). With ``--cpus`` (as root on a cgroup v1 host) the
script first moves itself into a new child cgroup of its own with that quota; otherwise it
measures under whatever quota it runs in. Rows, interleaved in one process on the same captured
call: torch eager fp32 and OpenVINO fp32, each with the default pool and with the cap.

    python benchmarks/cpu_quota_threads.py --cpus 1
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import bench_args  # this folder: scripts run as python benchmarks/NAME.py

PERIOD_US = 100_000


def enter_quota(cpus: float) -> Path:
    """Move this process into a new cgroup v1 ``cpu`` child with a quota of ``cpus``."""
    from sdopt import cgroups

    own = [level for version, level in cgroups.levels("cpu") if version == "v1"]
    if not own or not os.access(own[0], os.W_OK):
        raise SystemExit("--cpus needs a writable cgroup v1 cpu hierarchy (root on a v1 host); "
                         "run the script inside a container with --cpus instead")
    child = own[0] / f"sdopt-quota-{uuid.uuid4().hex[:8]}"
    child.mkdir()
    (child / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (child / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
    (child / "cgroup.procs").write_text(str(os.getpid()))
    return child


def leave_quota(child: Path) -> None:
    parent = child.parent
    (parent / "cgroup.procs").write_text(str(os.getpid()))
    child.rmdir()


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "cpu_quota_threads.json", steps=2, rounds=6,
                               rounds_help="interleaved rounds", ths=None, device=False)
    parser.add_argument("--cpus", type=float, default=None,
                        help="run under a new CFS quota of this many CPUs (root, cgroup v1)")
    args = parser.parse_args(argv)
    child = enter_quota(args.cpus) if args.cpus else None
    try:
        result = measure(args)
    finally:
        if child is not None:
            leave_quota(child)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return 0


def measure(args) -> dict:
    import copy
    import statistics

    import torch

    import sdopt
    from sdopt import cpu_threads
    from sdopt.backends.openvino import CompiledPerShape
    from sdopt.device import detect, library_versions
    from sdopt.optimize.capture import collect_samples
    from sdopt.optimize.paired import interleave
    from sdopt.optimize.search import cycling_call
    from search_cold import cpu_kind

    quota, affinity = cpu_threads.cpu_quota(), cpu_threads.affinity_cpus()
    capped = cpu_threads.quota_threads()
    if capped is None:
        raise SystemExit(f"no CPU quota below the affinity ({affinity} CPUs) here: nothing to "
                         "compare (use --cpus)")
    default_threads = torch.get_num_threads()
    pipe = sdopt.build_preset(args.preset)
    calls = [s.inputs for s in collect_samples(pipe, ["a photo of an astronaut riding a horse"],
                                               height=args.size, width=args.size,
                                               steps=args.steps, guidance_scale=7.5,
                                               seed=0).samples][:1]
    eager = cycling_call(pipe.unet, calls)

    def torch_with(threads):
        def call(i):
            torch.set_num_threads(threads)
            return eager(i)
        return call

    t0 = time.perf_counter()
    ov_pipe = sdopt.apply_variant(pipe, "openvino/fp32")  # compiles with the cap
    convert_s = time.perf_counter() - t0
    ov_capped = ov_pipe.unet.module
    ov_default = copy.copy(ov_capped)
    ov_default.graph = CompiledPerShape(ov_capped.graph.model, ov_capped.graph.hint)
    ov_default.graph.compile_for = lambda shapes, config=None, g=ov_default.graph: \
        CompiledPerShape.compile_for(g, shapes, {"INFERENCE_NUM_THREADS": 0})  # its default

    rows = {f"torch eager, {default_threads} threads (default)": torch_with(default_threads),
            f"torch eager, {capped} threads (cap)": torch_with(capped),
            "openvino fp32, default pool": cycling_call(ov_default, calls),
            f"openvino fp32, {capped} threads (cap)": cycling_call(ov_capped, calls)}
    with torch.inference_mode():
        measured = interleave(rows, rounds=args.rounds, warmup=1)
    names = list(rows)
    ratios = {}
    for default, cap in ((names[0], names[1]), (names[2], names[3])):
        r = measured.ratio(cap, default)  # > 1: the cap is faster
        ratios[cap] = {"speedup_over_default": r.speedup, "q1": r.q1, "q3": r.q3,
                       "rounds": r.rounds}
        print(f"{cap}: {r.speedup:.2f}x the default pool (IQR {r.q1:.2f}-{r.q3:.2f}, "
              f"{r.rounds} rounds)")
    return {"benchmark": "cpu_quota_threads", "preset": args.preset, "size": args.size,
            "quota_cpus": quota, "affinity_cpus": affinity, "cap_threads": capped,
            "torch_default_threads": default_threads, "openvino_convert_s": convert_s,
            "median_s": {n: statistics.median(s) for n, s in measured.samples_s.items()},
            "samples_s": measured.samples_s, "ratios": ratios,
            "environment": {"cpu": cpu_kind(), "device": detect("cpu").fingerprint(),
                            "libraries": library_versions()},
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "unix_time": time.time()}


if __name__ == "__main__":
    raise SystemExit(main())
