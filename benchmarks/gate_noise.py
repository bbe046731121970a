"""False alarms and detections of the gate on real runs of this machine, old rule vs new default.

Each bench run is its own process (a gate run in CI is one: a run's shift comes from its process
and machine state), made from the config ``sdopt init --model PRESET`` writes (search on; the
decision cache makes every run after the first reuse the search). First ``--history`` runs of
identical code make the baseline (the last one is the reference run; all of them its history of
runs, as ``sdopt baseline save --update-baseline`` keeps it); then each scenario runs ``--runs``
times:

- ``identical``: nothing changed (every alarm is false);
- ``optimized+30%`` / ``optimized+10%``: the optimized pipeline really takes that much longer (a
  busy wait of that fraction of each timed call, inside the timed call);
- ``shared+30%``: original and optimized both 30% slower (a dependency bump);
- ``same-job shared+30%``: ``sdopt bench --same-job-base HEAD`` with the head side 30% slower, as
  the default pull-request workflow measures it (real git repository, real same-job code).

Each run is judged three ways, side by side: the rule before issue #21 (one run's samples against
the baseline run's, median factor AND Mann-Whitney), the new default against a baseline of one
run (in-run ratio with gate.drift_allowance), and the new default against the baseline with its
history of runs (what a baseline updated on every push to main holds). The runs' latency samples
are kept in the result file, so ``--rejudge FILE`` judges them again with the current rules.
Nothing else may run on the machine meanwhile (two torch processes on 2 cores slow each other
10-40x).

    python benchmarks/gate_noise.py --preset tiny --runs 20 --history 10 --out \
        benchmarks/results/gate_noise_tiny.json
    python benchmarks/gate_noise.py --preset sd15 --size 256 --steps 2 --runs 6 --history 4 \
        --candidate torch_eager/bf16 --prompt "a cat" --scenarios identical,optimized+30% \
        --out benchmarks/results/gate_noise_sd15.json
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

SCENARIOS = {  # name: (slowdown of optimized, slowdown of original, same-job)
    "identical": (1.0, 1.0, False),
    "optimized+30%": (1.3, 1.0, False),
    "optimized+10%": (1.1, 1.0, False),
    "shared+30%": (1.3, 1.3, False),
    "same-job shared+30%": (1.3, 1.3, True),
}
RULES = ("before #21", "new, 1-run baseline", "new, baseline with history")


def old_rule(gate):
    """The rule before issue #21: one run's samples against the baseline run's."""
    from sdopt.gate.latency import Settings

    return Settings.of(gate, drift_allowance=0.0, absolute_drift_allowance=0.0)


def _child(args) -> int:
    """One bench run in this process, with the requested real slowdowns."""
    import sdopt.gate.bench as bench
    import sdopt.gate.same_job as same_job
    from sdopt.gate.config import load_config

    slow = {"original": args.slow_original, "optimized": args.slow_optimized,
            "head": args.slow_optimized, "base": 1.0}
    factors: dict[int, float] = {}
    generate = bench._generate

    def slowed(pipe, *a, **kw):
        t0 = time.perf_counter()
        out = generate(pipe, *a, **kw)
        extra = (factors.get(id(pipe), 1.0) - 1.0) * (time.perf_counter() - t0)
        deadline = time.perf_counter() + extra
        while time.perf_counter() < deadline:  # real time inside the timed call
            pass
        return out

    def tag(make):
        def wrapped(*a, **kw):
            result = make(*a, **kw)
            subject = result[0] if isinstance(result, tuple) else result
            factors[id(subject.pipe)] = slow[subject.name]
            return result
        return wrapped

    bench._generate = slowed
    bench.optimized_subject = same_job.optimized_subject = tag(bench.optimized_subject)
    bench.original_subject = tag(bench.original_subject)
    config = load_config(args.config)
    if args.same_job:
        same_job.bench_same_job(config, args.config, "HEAD", args.child_out, progress=False)
    else:
        from sdopt.store import atomic_directory

        with atomic_directory(Path(args.child_out), overwrite=False) as work:
            bench.write_results(bench.bench_config(config, work, progress=False), work)
    return 0


def _bench(config: Path, out: Path, slow_opt: float, slow_orig: float, same_job: bool,
           env: dict) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", "--config", str(config), "--child-out", str(out),
           "--slow-optimized", str(slow_opt), "--slow-original", str(slow_orig)]
    if same_job:
        cmd.append("--same-job")
    subprocess.run(cmd, check=True, env=env, cwd=config.parent)
    return time.perf_counter() - t0


def _samples(results_dir: Path) -> dict:
    """What the rules need of one run: each variant's latency samples, in interleaved order, and
    the same-job tag. Kept in the result file, so the rules can be judged again later."""
    doc = json.loads((results_dir / "results.json").read_text())
    return {"samples": {name: v["latency_s"]["samples"] for name, v in doc["variants"].items()},
            "same_job": (doc.get("config") or {}).get("same_job")}


def _doc(run: dict, machine: dict) -> dict:
    """A results document holding only what the latency rules read."""
    return {"config": {**machine["workload"], "same_job": run.get("same_job")},
            "environment": {"device": machine["device"]}, "created_unix": 0,
            "variants": {name: {"latency_s": {"samples": s, "median": statistics.median(s)}}
                         for name, s in run["samples"].items()}}


def judge(row: dict, history: list[dict], machine: dict) -> dict[str, dict]:
    """The three rules' decisions on one run (latency; with this sdopt's code)."""
    from sdopt.gate import latency
    from sdopt.gate.config import GateConfig
    from sdopt.gate.history import with_run

    gate = GateConfig()
    new = latency.Settings.of(gate)
    if row.get("base"):  # same-job: its own pair
        base, current = _doc(row["base"], machine), _doc(row, machine)
        runs = []
    else:
        base, current = _doc(history[-1], machine), _doc(row, machine)
        runs = []
        for run in history:
            runs = with_run(runs, _doc(run, machine))
    old = latency.absolute_check(base["variants"]["optimized"]["latency_s"]["samples"],
                                 current["variants"]["optimized"]["latency_s"]["samples"], [],
                                 old_rule(gate), only_check=True)
    out = {RULES[0]: {"regression": old.regressed, "checks": {"samples": _check(old)}}}
    for rule, hist in ((RULES[1], []), (RULES[2], runs)):
        checks = latency.judge(base, current, "optimized", history=hist, s=new)
        out[rule] = {"regression": any(c.regressed for c in checks),
                     "checks": {c.name: _check(c) for c in checks}}
    return out


def _check(c) -> dict:
    return {"change": c.change, "allowed": c.allowed, "p": c.p_value, "regressed": c.regressed}


def _setup(work: Path, args) -> Path:
    work.mkdir(parents=True)
    extra = ["--candidate", args.candidate] if args.candidate else []
    for prompt in args.prompt:
        extra += ["--prompt", prompt]
    subprocess.run([sys.executable, "-m", "sdopt.cli", "init", "--model", args.preset, "--dir",
                    str(work), "--steps", str(args.steps), "--runs", str(args.samples),
                    "--no-workflows", *extra], check=True, capture_output=True)
    config = work / "sdopt.toml"
    if args.size:
        text = config.read_text().replace("# height = 512", f"height = {args.size}")
        config.write_text(text.replace("# width = 512", f"width = {args.size}"))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "sdopt.toml"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "config"], check=True)
    return config


def _all_rates(doc: dict) -> dict[str, dict[str, str]]:
    out = {}
    for scenario in dict.fromkeys(r["scenario"] for r in doc["runs"]):
        mine = [r for r in doc["runs"] if r["scenario"] == scenario]
        out[scenario] = {rule: f"{sum(r['rules'][rule]['regression'] for r in mine)}/{len(mine)}"
                         for rule in RULES}
    return out


def main(argv=None) -> int:
    parser = bench_args.parser(__doc__, "gate_noise.json", steps=20, rounds=20, device=False,
                               ths=None, rounds_help="unused (see --runs)")
    parser.set_defaults(preset="tiny", size=0)
    parser.add_argument("--runs", type=int, default=20, help="runs per scenario")
    parser.add_argument("--history", type=int, default=8, help="identical runs saved first")
    parser.add_argument("--samples", type=int, default=10, help="bench.runs of each run")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--candidate", default=None,
                        help="build this candidate instead of searching (e.g. torch_eager/bf16)")
    parser.add_argument("--prompt", action="append", default=[],
                        help="prompt to bench (repeatable; default: sdopt init's two)")
    parser.add_argument("--child", action="store_true", help=argparse_hidden())
    parser.add_argument("--config", type=Path)
    parser.add_argument("--child-out", type=Path)
    parser.add_argument("--slow-optimized", type=float, default=1.0)
    parser.add_argument("--slow-original", type=float, default=1.0)
    parser.add_argument("--same-job", action="store_true")
    parser.add_argument("--rejudge", type=Path, default=None,
                        help="judge the runs of a result file again with this sdopt's rules")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if args.rejudge:
        doc = json.loads(args.rejudge.read_text())
        machine = {"device": doc["device"], "workload": doc["workload"]}
        for row in doc["runs"]:
            row["rules"] = judge(row, doc["history"], machine)
        doc["regression_rates"] = _all_rates(doc)
        args.rejudge.write_text(json.dumps(doc, indent=1) + "\n")
        print("\n".join(_table(doc)))
        _write_markdown(args.rejudge.parent)
        return 0
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: expected one of {', '.join(SCENARIOS)}")
    from sdopt.gate.bench import environment

    rows, history, started = [], [], time.time()
    machine = {"device": environment()["device"], "workload": {}}

    def save() -> dict:  # after every run: an interrupted benchmark keeps what it measured
        for row in rows:
            row["rules"] = judge(row, history, machine)
        doc = {"benchmark": "gate_noise", "preset": args.preset, "size": args.size or None,
               "candidate": args.candidate or "search (sdopt init's config)",
               "steps": args.steps, "samples_per_run": args.samples,
               "history_runs": len(history), "runs_per_scenario": args.runs,
               "device": machine["device"], "workload": machine["workload"],
               "started_unix": int(started), "wall_s": round(time.time() - started),
               "rules": list(RULES), "history": history, "runs": rows}
        doc["regression_rates"] = _all_rates(doc)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        return doc

    with tempfile.TemporaryDirectory(prefix="sdopt-gate-noise-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, SDOPT_CACHE=str(work / "cache"))
        config = _setup(work / "repo", args)
        for i in range(args.history):
            out = work / f"history-{i}"
            wall = _bench(config, out, 1.0, 1.0, False, env)
            if not machine["workload"]:
                from sdopt.gate.history import run_summary

                machine["workload"] = run_summary(json.loads(
                    (out / "results.json").read_text()))["workload"]
            history.append({**_samples(out), "wall_s": wall})
            shutil.rmtree(out)
            print(f"history run {i + 1}/{args.history}: {wall:.0f} s", flush=True)
        for scenario in scenarios:
            slow_opt, slow_orig, same_job = SCENARIOS[scenario]
            for i in range(args.runs):
                out = work / f"{scenario.replace('%', 'pc').replace(' ', '_')}-{i}"
                wall = _bench(config, out, slow_opt, slow_orig, same_job, env)
                row = {"scenario": scenario, "run": i, "wall_s": wall, **_samples(out)}
                if same_job:
                    row["base"] = _samples(out / "base")
                rows.append(row)
                doc = save()
                print(f"{scenario} {i + 1}/{args.runs} ({wall:.0f} s): " + ", ".join(
                    f"{rule}: {'REGRESSION' if r['regression'] else 'pass'}"
                    for rule, r in rows[-1]["rules"].items()), flush=True)
                shutil.rmtree(out, ignore_errors=True)  # images of every run add up
    doc = save()
    print("\n" + "\n".join(_table(doc)))
    _write_markdown(Path(args.out).parent)
    return 0


def _table(doc: dict) -> list[str]:
    """The side-by-side table of one result file, with the spread that explains it."""
    size = f"{doc['size']} px" if doc["size"] else "native size"
    device = doc["device"]
    lines = [f"### {doc['preset']}, {size}, {doc['steps']} steps, {doc['samples_per_run']} samples "
             f"per run ({device.get('name')}, {device.get('cores')} cores)", "",
             f"Optimized variant: {doc.get('candidate', 'search')}. Baseline: "
             f"{doc['history_runs']} runs of identical code saved one after another; "
             f"{doc['wall_s'] / 60:.0f} min in all. "
             "REGRESSION verdicts:", "",
             "| scenario | " + " | ".join(doc["rules"]) + " |",
             "|---|" + "---:|" * len(doc["rules"])]
    for scenario, rates in doc["regression_rates"].items():
        lines.append(f"| {scenario} | " + " | ".join(rates[r] for r in doc["rules"]) + " |")
    spread = _spread(doc)
    if spread:
        lines += ["", spread]
    return lines


def _spread(doc: dict) -> str:
    """How far identical runs moved: the absolute median and the in-run ratio."""
    rows = [r for r in doc["runs"] if r["scenario"] == "identical"]
    checks = [r["rules"][RULES[1]]["checks"] for r in rows]
    absolute = [c["absolute"]["change"] for c in checks if "absolute" in c]
    ratio = [c["in-run-ratio"]["change"] for c in checks if "in-run-ratio" in c]
    if not absolute or not ratio:
        return ""
    return (f"Identical runs against the 1-run baseline: the optimized median moved "
            f"x{min(absolute):.3f}-x{max(absolute):.3f} (median x{statistics.median(absolute):.3f}), "
            f"its in-run ratio to the original x{min(ratio):.3f}-x{max(ratio):.3f} (median "
            f"x{statistics.median(ratio):.3f}).")


def _write_markdown(folder: Path) -> None:
    """gate_noise.md from every gate_noise*.json in ``folder`` (one section per run of this)."""
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("gate_noise*.json"))]
    lines = ["# Gate noise: false alarms and detections on real runs", "",
             "Written by `benchmarks/gate_noise.py` (see its docstring for the scenarios and the "
             "three rules). Each run is its own process; nothing else ran on the machine.", ""]
    for doc in docs:
        lines += _table(doc) + [""]
    (folder / "gate_noise.md").write_text("\n".join(lines) + "\n" + READING)


READING = """\
### Reading the table

- *before #21*: one run's samples against the baseline run's (median factor 1.10 AND
  Mann-Whitney p < 0.01). Whole runs drift, so it flags identical code most of the time.
- *new, 1-run baseline*: the in-run ratio (optimized over original, pair by pair) against the
  baseline run's, allowing `gate.drift_allowance`; the absolute check counts only a 2x slowdown.
  The default allowance was set from these runs: 0.15 gave 3/20 false alarms (the ratio of
  identical runs moved up to x1.185 here, in two modes: runs where the whole machine was slower
  also slowed the optimized pipeline more), 0.20 gives 0/20. A 1-run baseline can land in
  either mode, so detection of a 30% slowdown depends on that luck; the history removes it.
- *new, baseline with history*: the same checks against the prediction bound learnt from the
  baseline's 10 runs (allowed x1.17 for the ratio, x1.57 for the absolute median here).
- *same-job*: base and head interleaved in one job (the default for pull requests in the
  action): drift cancels, and a slowdown of original and optimized alike is caught.
- A 10% slowdown is within this machine's run-to-run drift of the ratio: only same-job can
  see it reliably.
- sd15 at 256 px (fewer runs: 3 to 3.5 minutes each): its runs drifted less than the tiny
  model's (identical code x0.92-x0.97 against the 1-run baseline, the in-run ratio x0.94-x0.99),
  so even the old rule passed identical code there; every rule caught the 30% slowdown.
- Not measured yet: a shared slowdown against a stored baseline (the absolute check with
  history allows x1.57 here: whole runs moved x0.89-x1.30 between identical runs on tiny, so
  only same-job catches a shared 30% on this machine).
"""


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
