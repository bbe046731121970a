"""sdopt against what users compare it with, end to end per image, side by side on this CPU.

Rows (``--only`` picks some; fp32 eager always runs, it is the reference):

- ``fp32_eager``: the diffusers pipeline of the preset's family (StableDiffusionPipeline for
  ``sd15``, StableDiffusionXLPipeline for ``sdxl``), fp32, eager (the reference images too);
- ``diffusers_recipe``: diffusers' speed recipe: bf16, SDPA attention, torch.compile of the UNet;
- ``optimum_openvino``: optimum-intel's pipeline for that family (OVStableDiffusionPipeline,
  OVStableDiffusionXLPipeline) exported from the same folder with its default options (int8
  weights for submodels of >= 1e9 weights: the SDXL UNet; the row's notes say what it did),
  static shapes (``reshape`` + ``compile``, its documented speed-up);
- ``optimum_onnxruntime``: optimum's ORT pipeline for that family exported from the same folder;
- ``deepcache``: the DeepCache library on the fp32 pipeline (the peer of "unconstrained");
- ``sdopt_constrained``: ``optimize_model(metric_drop_ths=0.05)``, saved and loaded back;
- ``sdopt_unconstrained``: the constrained pick plus the techniques the unconstrained search picks.

Every row runs in its own fresh process per round (``peers/peers_worker.py``): load, a 2-step
warm-up generation, then one timed image; the rows' order rotates every round, so machine drift
hits all of them, and the table shows medians over rounds. Preparing (export, compile, search) is
timed once, cold, before the rounds. Every process records its peak RSS for the load (in a
prepare run: the export or search) and for the warm-up and timed images apart: a full-size SDXL
UNet is 10 GB in fp32, and whether a row's preparation fits the machine is part of the result.
The optimum peers need other transformers/huggingface_hub versions than our .venv, so they run
in their own virtual environments made by ``benchmarks/peers/setup.sh`` (same torch 2.13.0 and
openvino/onnxruntime as ours).

    bash benchmarks/peers/setup.sh     # once: the optimum venvs and DeepCache
    flock /tmp/sdopt-heavy.lock env MALLOC_MMAP_THRESHOLD_=33554432 \\
        MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \\
        .venv/bin/python benchmarks/peers.py --sizes 256 --steps 20 --rounds 3
    # SDXL: --preset sdxl (sdxl-tiny for a smoke test); --results and --doc redirect the output

Writes ``results/peers_<preset>_<size>.json``, the generated block of docs/benchmarks.md and
``results/peers_<preset>.html`` (the same as plotly charts, offline; not committed: it inlines
plotly.js, 4 MB; ``--render-only`` rebuilds both from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "peers"))

import peers_limits  # noqa: E402
import peers_report  # noqa: E402

WORKER = HERE / "peers" / "peers_worker.py"
# The families the worker can drive: text to image (a prompt is all it passes) with a UNet (what
# it measures per call). The pipeline class of each comes from sdopt.models.FAMILIES.
TEXT_TO_IMAGE_UNET_FAMILIES = ("sd", "sdxl")
PROMPTS = ["a photo of an astronaut riding a horse on mars",
           "a watercolor painting of a city at night",
           "portrait of a cat wearing a hat, studio light"]
MAIN_PY = sys.executable
ROWS = {  # name: (label, venv, kind)
    "fp32_eager": ("diffusers fp32 eager (reference)", "main", "reference"),
    "diffusers_recipe": ("diffusers recipe: bf16 + SDPA + torch.compile", "main",
                         "constrained peer"),
    "optimum_openvino": ("optimum-intel OpenVINO pipeline", "ov", "constrained peer"),
    "optimum_onnxruntime": ("optimum ONNX Runtime pipeline", "ort", "constrained peer"),
    "deepcache": ("DeepCache (fp32 diffusers)", "main", "unconstrained peer"),
    "sdopt_constrained": ("sdopt optimize_model, constrained", "main", "sdopt"),
    "sdopt_unconstrained": ("sdopt, unconstrained", "main", "sdopt"),
}
# What a row needs built once before its timed runs (its first process does it, cold).
NEEDS_PREPARE = {"diffusers_recipe", "optimum_openvino", "optimum_onnxruntime",
                 "sdopt_constrained", "sdopt_unconstrained"}
DOC_HEADER = """# Benchmarks: sdopt against its peers

How to run: `benchmarks/peers.py` (see `benchmarks/README.md`). Every number below is measured side
by side in one run on this machine; ratios are of medians over interleaved rounds.
"""


def log(msg: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gib(n) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "-"


def venv_python(venv: str, args) -> str | None:
    if venv == "main":
        return MAIN_PY
    path = Path(args.ov_python if venv == "ov" else args.ort_python)
    return str(path) if path.exists() else None


def run_worker(task: dict, python: str, timeout_s: float) -> dict:
    out = Path(task["out"])
    out.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        subprocess.run([python, str(WORKER), json.dumps(task)], cwd=REPO, env=env,
                       timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"row": task["row"], "ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    if not out.exists():
        return {"row": task["row"], "ok": False, "error": "worker died without a result "
                "(killed: out of memory?)"}
    return json.loads(out.read_text())


def preset_family(preset: str) -> dict:
    """The preset's family, its diffusers pipeline class (sdopt.models.FAMILIES: the one table
    of them) and its description; a one-line refusal for a family the worker cannot drive."""
    from sdopt.models import FAMILIES, PRESETS

    if preset not in PRESETS:
        raise SystemExit(f"peers.py: unknown preset '{preset}': expected one of "
                         f"{', '.join(PRESETS)}")
    family = PRESETS[preset].family
    if family not in TEXT_TO_IMAGE_UNET_FAMILIES:
        raise SystemExit(f"peers.py: preset '{preset}' is of the {family} family; the peers "
                         f"benchmark drives text-to-image UNet pipelines only "
                         f"({', '.join(TEXT_TO_IMAGE_UNET_FAMILIES)})")
    return {"family": family, "pipeline_class": FAMILIES[family],
            "description": PRESETS[preset].description}


def base_task(args, row: str, size: int, mode: str, scratch: Path, tag: str) -> dict:
    return {"row": row, "mode": mode, "folder": str(args.work / "model"), "work": str(args.work),
            "preset": args.preset, "family": args.family["family"],
            "pipeline_class": args.family["pipeline_class"],
            "sdopt_time_budget_s": args.sdopt_time_budget,
            "size": size, "steps": args.steps, "prompt": PROMPTS[0], "prompts": PROMPTS,
            "seed": 0, "guidance_scale": 7.5, "ths": args.ths, "search_size": args.search_size,
            "search_steps": args.search_steps, "sdopt_backends": args.sdopt_backends,
            "optimizer_warm": not args.no_optimizer_warm,
            "unconstrained_source": args.unconstrained_source,
            "out": str(scratch / f"{row}-{size}-{tag}.json"),
            "image": str(scratch / f"{row}-{size}-{tag}.npy")}


def ensure_model(args) -> None:
    folder = args.work / "model"
    if folder.exists():
        return
    log(f"writing the {args.preset} preset as a diffusers folder: {folder}")
    subprocess.run([MAIN_PY, "-c", "import sys, sdopt.models as m; "
                    "m.save_preset(sys.argv[1], sys.argv[2])", args.preset, str(folder)],
                   check=True, cwd=REPO)


def machine_text(limits: dict) -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {limits['cores']} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def summarise(args, size: int, rows: list[str], runs: dict, prepared: dict, notes: list[str],
              limits: dict, rounds_done: int, first_size: bool) -> dict:
    import numpy as np

    from sdopt.optimize.metrics import psnr_db

    ref_image = None
    ref_path = runs.get("fp32_eager", [{}])[0].get("_image") if runs.get("fp32_eager") else None
    if ref_path and Path(ref_path).exists():
        ref_image = np.load(ref_path)
    table = []
    for row in ROWS:
        if row not in rows:
            continue
        label, _, kind = ROWS[row]
        entry = {"row": row, "label": label, "kind": kind}
        prep = prepared.get(row)
        ok_runs = [r for r in runs.get(row, []) if r.get("ok")]
        failed = [r for r in runs.get(row, []) if not r.get("ok")]
        if prep is not None and not prep.get("ok"):
            entry["status"] = f"not run: prepare failed: {prep.get('error')}"
        elif not ok_runs:
            entry["status"] = (f"not run: {failed[0].get('error')}" if failed else
                               "not run: no round completed")
        else:
            lat = [x for r in ok_runs for x in r["latencies_s"]]
            entry.update(status="ok", latencies_s=lat, median_s=statistics.median(lat),
                         precision=ok_runs[0].get("precision"),
                         settings=ok_runs[0].get("settings"),
                         peak_rss_bytes=max(r["peak_rss_bytes"] for r in ok_runs),
                         run_peak_rss_bytes=max(r.get("run_peak_rss_bytes") or 0
                                                for r in ok_runs) or None,
                         load_warmup_median_s=statistics.median(
                             r["load_s"] + r["warmup_s"] for r in ok_runs),
                         failed_rounds=[r.get("error") for r in failed])
            image_path = ok_runs[0].get("_image")
            if ref_image is not None and image_path and Path(image_path).exists():
                try:
                    entry["psnr_db"] = psnr_db(ref_image, np.load(image_path))
                except ValueError as exc:
                    entry["psnr_error"] = str(exc)
            cold = dict((prep or {}).get("prepare") or ok_runs[0].get("prepare") or {})
            if prep is not None and row == "diffusers_recipe":
                cold["compile_s"] = prep["load_s"] + prep["warmup_s"]
            if prep is not None:
                cold["prepare_peak_rss_bytes"] = prep.get("peak_rss_bytes")
                cold["prepare_load_peak_rss_bytes"] = prep.get("load_peak_rss_bytes")
            if row.startswith("sdopt"):
                cold["search_size"] = args.search_size
            entry["prepare_cold"] = cold
            row_notes = (prep or {}).get("notes") or ok_runs[0].get("notes")
            if row_notes:
                entry["notes"] = row_notes
        table.append(entry)
    ref = next((e for e in table if e["row"] == "fp32_eager" and e["status"] == "ok"), None)
    peers = [e for e in table if e["status"] == "ok" and e["kind"].endswith("peer")]
    best_peer = min(peers, key=lambda e: e["median_s"]) if peers else None
    for e in table:
        if e["status"] != "ok":
            continue
        e["vs_fp32"] = ref["median_s"] / e["median_s"] if ref else None
        e["vs_best_peer"] = best_peer["median_s"] / e["median_s"] if best_peer else None
    unet = []
    flops = next((r.get("unet_flops") for r in runs.get("fp32_eager", []) if r.get("unet_flops")),
                 None)
    for row in ("fp32_eager", "diffusers_recipe", "sdopt_constrained"):
        call = next((r for r in runs.get(row, []) if r.get("unet_call_s")), None)
        if call is None:
            continue
        precision = call.get("precision") or "fp32"
        u = {"row": row, "precision": precision, "call_s": call["unet_call_s"]}
        if flops:
            u["gflops_per_s"] = flops / 1e9 / call["unet_call_s"]
            u["fraction_of_peak"] = peers_limits.fraction_of_peak(
                flops / 1e9, call["unet_call_s"], precision, limits)
            u["fraction_of_attainable_gemm"] = peers_limits.fraction_of_peak(
                flops / 1e9, call["unet_call_s"], precision, limits, of="attainable_gemm_gflops")
            if precision == "int8":  # int8 plans keep some layers in bf16: bf16's peak too
                u["fraction_of_bf16_peak"] = peers_limits.fraction_of_peak(
                    flops / 1e9, call["unet_call_s"], "bf16", limits)
        unet.append(u)
    profile = next((r.get("profile") for r in runs.get("sdopt_constrained", [])
                    if r.get("profile")), None)
    import torch

    from sdopt.device import library_versions

    env = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                          "MALLOC_TOP_PAD_", "OMP_NUM_THREADS")}
    return {
        "benchmark": "peers", "preset": args.preset, "size": size, "steps": args.steps,
        "preset_description": args.family["description"], "family": args.family["family"],
        "pipeline_class": args.family["pipeline_class"],
        "prompt": PROMPTS[0], "seed": 0, "guidance_scale": 7.5, "batch": 1,
        "rounds_requested": args.rounds, "rounds_done": rounds_done, "rows": table,
        "best_peer": best_peer["row"] if best_peer else None,
        "unet_flops": flops, "unet": unet, "profile": profile, "limits": limits,
        "notes": notes, "first_size_prepared": first_size,
        "search": {"size": args.search_size, "steps": args.search_steps,
                   "backends": args.sdopt_backends, "metric_drop_ths": args.ths,
                   "time_budget_s": args.sdopt_time_budget,
                   "unconstrained_source": args.unconstrained_source},
        "device_text": machine_text(limits), "libraries": library_versions(),
        "peer_venvs": {"ov": args.ov_python, "ort": args.ort_python},
        "environment": env,
        "environment_text": ", ".join(f"{k}={v}" for k, v in env.items() if v) or "default",
        "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "unix_time": int(time.time()),
    }


def run_size(args, size: int, rows: list[str], limits: dict, first_size: bool) -> dict:
    scratch = args.work / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    # rows left out with --only are said, not silently missing from the table
    notes: list[str] = [f"{', '.join(r for r in ROWS if r not in rows)}: not run (--only "
                        f"{' '.join(r for r in rows)})"] if len(rows) < len(ROWS) else []
    prepared: dict[str, dict] = {}
    runnable = []
    for row in rows:
        python = venv_python(ROWS[row][1], args)
        if python is None:
            notes.append(f"{row}: not run: its venv is missing (run benchmarks/peers/setup.sh)")
            prepared[row] = {"ok": False, "error": "venv missing: run benchmarks/peers/setup.sh"}
            continue
        if row in NEEDS_PREPARE:
            log(f"{size} px: preparing {row} (cold)")
            task = base_task(args, row, size, "prepare", scratch, "prepare")
            res = run_worker(task, python, args.worker_timeout)
            prepared[row] = res
            if not res.get("ok"):
                log(f"{size} px: {row} not run: {res.get('error')}")
                continue
            log(f"{size} px: {row} prepared: load {res['load_s']:.0f} s, warm-up "
                f"{res['warmup_s']:.0f} s, peak RSS {gib(res.get('load_peak_rss_bytes'))} "
                f"(load/prepare) {gib(res.get('run_peak_rss_bytes'))} (warm-up), "
                f"{json.dumps(res.get('prepare', {}))[:300]}")
        runnable.append(row)
    runs: dict[str, list[dict]] = {row: [] for row in rows}
    started = time.perf_counter()
    rounds_done = 0
    for r in range(args.rounds):
        if r > 0 and args.max_minutes:
            per_round = (time.perf_counter() - started) / r
            if time.perf_counter() - started + per_round > args.max_minutes * 60:
                notes.append(f"rounds cut to {r} of {args.rounds}: the next would pass "
                             f"--max-minutes {args.max_minutes}")
                log(notes[-1])
                break
        order = runnable[r % len(runnable):] + runnable[:r % len(runnable)] if runnable else []
        for row in order:
            extras = []
            if r == 0:
                extras = {"fp32_eager": ["flops", "unet_call"],
                          "diffusers_recipe": ["unet_call"],
                          "sdopt_constrained": ["unet_call", "profile"]}.get(row, [])
            task = base_task(args, row, size, "time", scratch, f"r{r}")
            task["extras"] = extras
            res = run_worker(task, venv_python(ROWS[row][1], args), args.worker_timeout)
            res["_image"] = task["image"]
            runs[row].append(res)
            if res.get("ok"):
                log(f"{size} px round {r + 1}/{args.rounds}: {row} "
                    f"{res['latencies_s'][0]:.2f} s/image (load {res['load_s']:.0f} s, "
                    f"warm-up {res['warmup_s']:.0f} s, peak {res['peak_rss_bytes'] / 2**30:.1f} "
                    "GiB)")
            else:
                log(f"{size} px round {r + 1}: {row} failed: {res.get('error')}")
        rounds_done = r + 1
    return summarise(args, size, rows, runs, prepared, notes, limits, rounds_done, first_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15")
    parser.add_argument("--sizes", default="256,512", help="comma-separated image sides (px)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size")
    parser.add_argument("--only", nargs="+", choices=list(ROWS), default=None,
                        help="rows to run (fp32_eager always runs: it is the reference)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="per size: stop starting rounds past this many minutes")
    parser.add_argument("--ths", type=float, default=0.05, help="sdopt metric_drop_ths")
    parser.add_argument("--search-size", type=int, default=256,
                        help="size optimize_model searches at (its pick is reused at every size)")
    parser.add_argument("--search-steps", type=int, default=6,
                        help="optimize_model num_inference_steps (sampled timesteps)")
    parser.add_argument("--sdopt-backends", nargs="*", default=None,
                        help="backends optimize_model may try (default: all it knows)")
    parser.add_argument("--sdopt-time-budget", type=float, default=None,
                        help="optimize_model time_budget_s (default: sdopt's own, 240 s "
                             "constrained or 3x the first stage's run of the original)")
    parser.add_argument("--no-optimizer-warm", action="store_true",
                        help="skip the second optimize_model run that times a warm cache")
    parser.add_argument("--unconstrained-source",
                        default=str(HERE / "results" / "techniques_e2e.json"),
                        help="'search' to run optimize_model unconstrained (hours at sd15 size), "
                             "or a techniques_e2e.json whose winner is stacked on the constrained "
                             "pick")
    parser.add_argument("--work", type=Path, default=None,
                        help="artifacts (model folder, exports, saved models); default "
                             "~/.cache/sdopt-peers/<preset>")
    parser.add_argument("--ov-python", default=str(REPO / ".venv" / "peers-ov" / "bin" / "python"))
    parser.add_argument("--ort-python",
                        default=str(REPO / ".venv" / "peers-ort" / "bin" / "python"))
    parser.add_argument("--worker-timeout", type=float, default=4 * 3600)
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="folder of the JSON results and the HTML charts (--render-only "
                             "reads the JSON from it)")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file whose generated block is rewritten ('' for none)")
    parser.add_argument("--fresh", action="store_true", help="delete the prepared artifacts first")
    parser.add_argument("--render-only", action="store_true",
                        help="only re-render docs/benchmarks.md and the HTML charts from the "
                             "results already written")
    parser.add_argument("--prepare-only", action="store_true",
                        help="prepare the rows (cold: export, compile, search) and stop; later "
                             "runs reuse what was prepared and report its cold figures")
    args = parser.parse_args(argv)
    args.work = (args.work or Path.home() / ".cache" / "sdopt-peers" / args.preset).resolve()
    args.family = preset_family(args.preset)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    rows = [r for r in ROWS if args.only is None or r in args.only or r == "fp32_eager"]
    if args.fresh and args.work.exists():
        for item in args.work.iterdir():
            if item.name != "model":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    args.work.mkdir(parents=True, exist_ok=True)

    from sdopt.store import write_json

    if args.render_only:
        render(args)
        return 0
    limits = peers_limits.machine_limits()
    log(f"clock {limits['ghz']:.2f} GHz ({limits['ghz_source']}); peaks "
        f"{ {k: round(v) for k, v in limits['peak_gflops'].items()} }; a {limits['gemm_side']}"
        f"-side GEMM attains { {k: round(v) for k, v in limits['attainable_gemm_gflops'].items()} }")
    ensure_model(args)
    if args.prepare_only:
        args.rounds = 0
    for i, size in enumerate(sizes):
        result = run_size(args, size, rows, limits, first_size=(i == 0))
        if args.prepare_only:
            log(f"{size} px prepared; no rounds run, nothing written")
            continue
        out = args.results / f"peers_{args.preset}_{size}.json"
        write_json(out, result)
        log(f"written {out}")
        for e in result["rows"]:
            if e["status"] == "ok":
                cold = e.get("prepare_cold") or {}
                log(f"  {e['row']:22s} {e['median_s']:8.2f} s/image  {e['vs_fp32']:5.2f}x fp32  "
                    f"psnr {e.get('psnr_db', float('nan')):.1f} dB  peak RSS "
                    f"{gib(e.get('peak_rss_bytes'))} per run, "
                    f"{gib(cold.get('prepare_peak_rss_bytes'))} prepare")
            else:
                log(f"  {e['row']:22s} {e['status']}")
        render(args)
    return 0


def render(args) -> None:
    """docs/benchmarks.md's generated block and the HTML page with the charts, from every
    results/peers_<preset>_<size>.json there is."""
    from sdopt.report.html import plotly_js
    from sdopt.store import atomic_write_text

    found = [json.loads(p.read_text()) for p in
             sorted(args.results.glob(f"peers_{args.preset}_*.json"))]
    if str(args.doc):
        atomic_write_text(args.doc, peers_report.update_doc(args.doc, found, DOC_HEADER))
        log(f"updated {args.doc}")
    page = args.results / f"peers_{args.preset}.html"
    atomic_write_text(page, peers_report.render_html(found, str(plotly_js())))
    log(f"charts: {page} (self-contained, offline)")


if __name__ == "__main__":
    sys.exit(main())
