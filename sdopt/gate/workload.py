"""How much the gate's workload costs on a runner, and the workload ``sdopt init`` writes for it.

``sdopt init`` used to write 20 steps x 10 runs x 2 prompts at the model's native size whatever
the runner: for sd15 on ``ubuntu-latest`` (no GPU) that is hours, far past the 60-minute job
timeout it writes. Here the workload is chosen from the runner: its kind (a GPU runner label, or
CPU), then the image size, the search budget and the runs of that kind, and the most denoising
steps that keep the estimate within ``SAFETY`` of the timeout.

The estimate is deliberately pessimistic, built from measured numbers only (cited below), on the
slowest machine of each kind we plan for:

* one image = ``steps`` x (one UNet call, classifier-free guidance: batch 2) + the rest of the
  pipeline (text encoder, VAE decode, the bench's own work);
* both measured subjects cost what the **original fp32** pipeline costs (the optimized one is
  faster, by how much depends on the runner's CPU: nothing is assumed);
* same-job mode, which the generated workflow turns on (``same_job: auto``), builds and measures
  the base and the head side: two searches, each up to the written ``optimize.time_budget_s``
  plus building the pick, and 2 subjects x (runs + 1 warm-up) x prompts x seeds images;
* a fixed job overhead: checkout, building or pulling the sdopt image, downloading the model.

CPU (``STEP_COSTS["cpu"]``): ``benchmarks/results/peers_sd15_256.json`` and
``peers_sd15_512.json``, the "diffusers fp32 eager (reference)" rows and their ``unet`` rows:
sd15 architecture, 20 steps, a 2-core AMD Zen 4 (torch 2.13 CPU, 2 threads): one UNet call 2.455
s at 256 px and 10.887 s at 512 px (the 2026-12-04 run); 50.94 s and 214.22 s per image. The
rest of one image in ``sdopt bench`` itself is larger than in that diffusers loop:
``gate_noise_sd15.json`` (sdopt bench, sd15 256 px, 2 steps, same CPU kind) measured 12.4 s per
image of the original, so 12.4 - 2 x 2.455 = 7.5 s; at 512 px that rest is scaled by the pixel
count (30 s; the diffusers loop gives 214.22 - 20 x 10.887 < 0, the call being timed alone
after the image, where it ran slower than in the loop: the 30 s is kept). GitHub's
``ubuntu-latest`` (4 vCPUs: 2 cores with SMT, AVX2, no bf16 or VNNI) has no more fp32
throughput than those 2 Zen 4 cores (2 x 256-bit FMA per core either way), so the figures
are used as they are.

GPU (``STEP_COSTS["gpu"]``): ``benchmarks/results/gpu/bench_cuda_sd15_512.json``, an H200: the
original fp32 pipeline 0.895 s per 20-step 512-px image, its UNet 0.838 s (41.9 ms a step), text
encoder and VAE 0.036 s. The slowest GPU runner planned for is an NVIDIA T4 (GitHub's
``gpu-t4-4-core`` larger runner: 8.1 fp32 TFLOP/s against the H200's 67), so those figures are
multiplied by ``GPU_SLOWDOWN`` = 8 (an assumption from the two data sheets, not a measurement);
the rest of one image is then taken as 2 s, over 4x the scaled 0.29 s, for the bench's own work.

The tiny preset (``TINY_COSTS``): ``gate_noise_tiny.json``, 64 px, 20 steps: 0.75-1.12 s per image
of the original on the same 2-core CPU, so 0.06 s a step and 0.3 s for the rest.

Everything else is taken as sd15-sized (a UNet of ~860 M parameters), except the ``sdxl`` preset:
SDXL's UNet (~2.6 G parameters) is taken as ``SDXL_SCALE`` = 3x sd15's per step at the same size
(its parameter ratio; not measured here). A hub id or folder of an SDXL model is not recognised:
lower ``bench.runs`` or ``bench.steps`` for it, or raise the timeout.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import SdoptError

RUNNER_KINDS = ("cpu", "gpu")
DEFAULT_TIMEOUT_MIN = 60
MAX_TIMEOUT_MIN = 360          # GitHub-hosted runners end every job at 6 hours
SAFETY = 0.8                   # the estimate may use at most this share of the timeout
JOB_OVERHEAD_S = 600           # checkout, building or pulling the image, downloading the model
LOAD_S = 60                    # loading one side's pipeline, or building its pick without search
WARMUP = 1                     # bench.warmup that init writes
GPU_SLOWDOWN = 8.0
STEP_LADDER = (20, 16, 12, 10, 8, 6, 4, 2)
SDXL_SCALE = 3.0

# (kind, size in px) -> (seconds of one UNet call, seconds of the rest of one image)
STEP_COSTS = {
    ("cpu", 256): (2.455, 7.5),
    ("cpu", 512): (10.887, 30.0),
    ("gpu", 512): (0.0419 * GPU_SLOWDOWN, 2.0),
}
TINY_COSTS = (0.06, 0.3)       # the tiny preset at its 64 px, either kind

# Runner labels that mean a GPU: a word "gpu", "cuda" or "nvidia", or an NVIDIA data-centre GPU's
# name as its own word (GitHub's larger runners are named by their owner, e.g. gpu-t4-4-core).
_GPU_WORDS = re.compile(r"(?:^|[-_.])(gpu|gpus|cuda|nvidia|t4|l4|l40s?|a10g?|a100|h100|h200|"
                        r"v100|a6000)(?=$|[-_.\d])", re.IGNORECASE)


@dataclass(frozen=True)
class Profile:
    """What init writes for one kind of runner (the steps are chosen by ``plan_workload``)."""
    kind: str
    description: str
    size: int | None               # None: the model's native size (the tiny preset)
    runs: int
    time_budget_s: int


PROFILES = {
    "cpu": Profile("cpu", "a CPU runner (e.g. ubuntu-latest: 4 vCPUs, no GPU)", 256, 5, 300),
    "gpu": Profile("gpu", "a GPU runner (the slowest planned for: an NVIDIA T4)", 512, 10, 600),
}


def runner_kind(labels: list[str], requested: str = "auto") -> str:
    """``requested`` (cpu, gpu), or with ``auto`` gpu when a label names one (``_GPU_WORDS``)."""
    if requested != "auto":
        if requested not in RUNNER_KINDS:
            raise SdoptError(f"--runner-kind '{requested}': expected auto, cpu or gpu")
        return requested
    return "gpu" if any(_GPU_WORDS.search(label) for label in labels) else "cpu"


def is_tiny(model: str) -> bool:
    from ..models import PRESETS

    preset = PRESETS.get(model)
    return preset is not None and "tiny" in model


@dataclass(frozen=True)
class Workload:
    kind: str
    model: str
    size: int | None
    steps: int
    runs: int
    prompts: int
    seeds: int = 1
    time_budget_s: int = 600
    searches: bool = True          # False: a pinned candidate, built without a search
    same_job: bool = True          # base and head measured in this job (the workflow's auto)

    def costs(self) -> tuple[float, float, str]:
        """(UNet call, rest of an image, where the figures come from)."""
        if is_tiny(self.model):
            return (*TINY_COSTS, "gate_noise_tiny.json")
        size = self.size or 512
        key = (self.kind, 256 if self.kind == "cpu" and size <= 256 else 512)
        step, rest = STEP_COSTS[key]
        scale = max(1.0, (size / key[1]) ** 2)      # larger than the table: by pixel count
        if self.model == "sdxl":
            scale *= SDXL_SCALE
        source = {"cpu": f"peers_sd15_{key[1]}.json + gate_noise_sd15.json",
                  "gpu": "gpu/bench_cuda_sd15_512.json x8"}[self.kind]
        return step * scale, rest * scale, source

    def images(self) -> int:
        subjects = 2                 # original + optimized, or base + head in same-job mode
        return subjects * (self.runs + WARMUP) * self.prompts * self.seeds

    def seconds(self) -> float:
        step, rest, _ = self.costs()
        sides = 2 if self.same_job else 1
        search = (self.time_budget_s if self.searches else 0) + LOAD_S
        return (JOB_OVERHEAD_S + self.images() * (self.steps * step + rest)
                + sides * (search + LOAD_S))

    def minutes(self) -> float:
        return self.seconds() / 60

    def timeout_minutes(self) -> int:
        """60, or the multiple of 10 minutes that keeps the estimate within SAFETY of it."""
        need = math.ceil(self.minutes() / SAFETY / 10) * 10
        return min(MAX_TIMEOUT_MIN, max(DEFAULT_TIMEOUT_MIN, need))

    def fits(self, timeout_min: int = DEFAULT_TIMEOUT_MIN) -> bool:
        return self.minutes() <= SAFETY * timeout_min


def plan_workload(model: str, kind: str, prompts: int, *, steps: int | None = None,
                  runs: int | None = None, searches: bool = True) -> Workload:
    """The workload init writes for ``kind``: the profile's size, runs and search budget, and
    the most steps of ``STEP_LADDER`` whose estimate fits the 60-minute timeout (``steps`` or
    ``runs`` given: kept as they are; the timeout is then raised to fit, see timeout_minutes)."""
    profile = PROFILES[kind]
    tiny = is_tiny(model)
    base = Workload(kind=kind, model=model, size=None if tiny else profile.size,
                    steps=steps or STEP_LADDER[0], runs=runs or (10 if tiny else profile.runs),
                    prompts=prompts, time_budget_s=profile.time_budget_s, searches=searches)
    if steps is not None:
        return base
    for candidate in STEP_LADDER:
        workload = Workload(**{**base.__dict__, "steps": candidate})
        if workload.fits():
            return workload
    return Workload(**{**base.__dict__, "steps": STEP_LADDER[-1]})


def describe(w: Workload, width: int = 94) -> list[str]:
    """Comment lines (without '#') saying what was chosen and why, for the generated files."""
    import textwrap

    step, rest, source = w.costs()
    size = f"{w.size} px" if w.size else "the model's native size"
    sides = "base and head, same-job mode" if w.same_job else "original and optimized"
    searches = (("2 searches" if w.same_job else "1 search") + f" of at most {w.time_budget_s} s"
                if w.searches else "no search (a pinned candidate)")
    text = (f"Workload sized by `sdopt init` for {PROFILES[w.kind].description}: {size}, "
            f"{w.steps} steps, {w.runs} runs. Estimated {w.minutes():.0f} min of the job's "
            f"{w.timeout_minutes()}-minute timeout: {w.images()} images ({sides}; runs + "
            f"{WARMUP} warm-up; {w.prompts} prompt(s)) at {w.steps} x {step:.2f} s + {rest:.1f} s "
            f"each, {searches}, {JOB_OVERHEAD_S // 60} min of job setup (measured costs: "
            f"benchmarks/results/{source}; sdopt/gate/workload.py).")
    if not is_tiny(w.model):
        text += (" Larger models (SDXL: ~3x a step) or more prompts: lower runs or steps, or "
                 "raise timeout-minutes.")
    return textwrap.wrap(text, width)
