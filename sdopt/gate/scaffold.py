"""What ``sdopt init`` writes: a commented sdopt.toml and the two workflows of the PR gate.

The texts follow ``examples/sdopt.toml`` and ``examples/workflows/sdopt-{gate,comment}.yml``
(``tests/test_init.py`` checks that they agree on every setting and permission), but live here
because an installed sdopt has no ``examples/`` folder. Every value put into them is validated
or escaped first: a model name or runner label must not be able to change the file's structure.
The workload (image size, steps, runs, search budget) and the job's timeout are chosen for the
runner the gate job runs on (``sdopt/gate/workload.py``), and both files say so in comments.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SdoptError
from ..version import __version__
from .workload import RUNNER_KINDS, Workload, describe, plan_workload, runner_kind

CONFIG_NAME = "sdopt.toml"
GATE_WORKFLOW = ".github/workflows/sdopt-gate.yml"
COMMENT_WORKFLOW = ".github/workflows/sdopt-comment.yml"
DEFAULT_ACTION = "org/sdopt-action@v1"
DEFAULT_PROMPTS = ("a photo of an astronaut riding a horse on mars",
                   "a watercolor painting of a city at night")

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ACTION = re.compile(r"^(\./[A-Za-z0-9_./-]*|[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[A-Za-z0-9_./-]+)$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9_./:@-]*$")


# --- TOML values -----------------------------------------------------------------------------

def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in str(text):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def dumps_toml(table: dict) -> str:
    """Top-level keys, then one ``[section]`` per nested table (all sdopt.toml needs)."""
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items()
             if not isinstance(value, dict) and value is not None]
    for name, section in table.items():
        if isinstance(section, dict):
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in section.items()
                      if value is not None]
    return "\n".join(lines) + "\n"


# --- what init writes ------------------------------------------------------------------------

@dataclass
class InitOptions:
    model: str
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    steps: int | None = None        # None: chosen for the runner (workload.plan_workload)
    runs: int | None = None
    candidate: str | None = None
    metric_drop_ths: float = 0.05
    latency_tolerance: float = 0.10
    action: str = DEFAULT_ACTION
    runs_on: list[str] = field(default_factory=lambda: ["ubuntu-latest"])
    image: str | None = None
    comment_image: str | None = None
    runner_kind: str = "auto"       # auto (from the runs_on labels), cpu or gpu

    def workload(self) -> Workload:
        """What the config asks of the gate job's runner, and the timeout that fits it."""
        kind = runner_kind(self.runs_on, self.runner_kind)
        return plan_workload(self.model, kind, len(self.prompts), steps=self.steps,
                             runs=self.runs, searches=not self.candidate)

    def validate(self) -> "InitOptions":
        if not self.model.strip():
            raise SdoptError("--model is empty: expected a preset (tiny, sd15), a diffusers "
                             "folder, a .safetensors file or a hub id such as org/name")
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise SdoptError("--prompt: expected non-empty text")
        if not _ACTION.match(self.action):
            raise SdoptError(f"--action '{self.action}': expected OWNER/REPO@REF (e.g. "
                             f"{DEFAULT_ACTION}) or a local path such as ./")
        for label in self.runs_on:
            if not _LABEL.match(label):
                raise SdoptError(f"--runs-on label '{label}': expected letters, digits, '.', "
                                 "'_' or '-' (comma separated, e.g. self-hosted,linux,gpu)")
        for what, image in (("--image", self.image), ("--comment-image", self.comment_image)):
            if image is not None and not _IMAGE.match(image):
                raise SdoptError(f"{what} '{image}': expected an image reference such as "
                                 "ghcr.io/org/sdopt:v1")
        if not 0 <= self.metric_drop_ths <= 1:
            raise SdoptError(f"--metric-drop-ths {self.metric_drop_ths}: expected 0 to 1")
        if self.latency_tolerance < 0:
            raise SdoptError(f"--latency-tolerance {self.latency_tolerance}: expected >= 0")
        if (self.steps is not None and self.steps < 1) or (self.runs is not None
                                                           and self.runs < 1):
            raise SdoptError("--steps and --runs: expected at least 1")
        if self.runner_kind not in ("auto", *RUNNER_KINDS):
            raise SdoptError(f"--runner-kind '{self.runner_kind}': expected auto, cpu or gpu")
        return self


def _comment(lines: list[str], indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in lines)


def render_config(o: InitOptions) -> str:
    w = o.workload()
    prompts = ",\n    ".join(toml_string(p) for p in o.prompts)
    if w.size:
        size = (f"{f'height = {w.size}':<32}# sized for the runner (see the top of this file)\n"
                f"width = {w.size}")
    else:
        size = ("# height = 512                  # default: the model's native size (multiple of 8)\n"
                "# width = 512")
    if o.candidate:
        optimize = (f"candidate = {toml_string(o.candidate)}   # built without a search "
                    "(`sdopt backends` lists them)\n"
                    f"# metric_drop_ths = {o.metric_drop_ths!r}   # or: search, keeping the "
                    "fastest candidate within this drop")
    else:
        optimize = ("# candidate = \"torch_eager/bf16\"   # build this candidate without a search "
                    "(`sdopt backends` lists them)\n"
                    f"metric_drop_ths = {o.metric_drop_ths!r}"
                    "          # search, keeping the fastest candidate within this drop")
    min_samples = 5
    runs_note = ("" if w.runs >= min_samples else
                 f"   # fewer than gate.min_samples = {min_samples}: latency judged on the ratio "
                 "alone")
    return f"""\
# sdopt.toml: what the CI gate measures and when it fails (written by `sdopt init`).
# Relative paths are relative to this file. Every field is optional except `model`.
# Reference: examples/sdopt.toml and docs/gate.md in the sdopt repository.
#
{_comment(describe(w))}
model = {toml_string(o.model)}   # preset (tiny, sd15), a diffusers folder, a .safetensors file, or org/name
# revision = "main"             # hub revision
# single_file_config = "configs/sd15"   # diffusers folder with the configs of a .safetensors model
output_dir = "sdopt-out"        # where `sdopt bench` / `sdopt gate` write

[bench]
prompts = [
    {prompts},
]
seeds = [0]                     # every prompt x seed pair is one image, compared with the baseline's
{size}
steps = {w.steps}
guidance_scale = 7.5
batch = 1                       # images per pipeline call
runs = {w.runs}{runs_note}
warmup = 1                      # untimed repetitions of every variant first
variants = ["original", "optimized"]    # measured interleaved: original, optimized, original, ...
device = "auto"                 # auto, cpu, cuda
# threads = 1                   # torch intra-op threads (steadier timings on busy shared runners)

[optimize]                      # how the "optimized" variant is made
# saved_model = "optimized-unet"   # a directory written by `sdopt optimize` / sdopt.save_model
{optimize}
optimization_time = "constrained"   # or "unconstrained": also approximate techniques
# backends = ["torch_eager", "torch_int8"]
# ignore_compilers = ["torch_compile"]
time_budget_s = {w.time_budget_s}             # the search's budget, counted in the runner estimate above
# exhaustive = true             # build every candidate (default: most promising first, bounds skip)

[gate]
latency_tolerance = {o.latency_tolerance!r}        # latency regresses only if median ratio > 1 + this ...
alpha = 0.01                    # ... AND the check is significant (p < alpha; docs/gate.md)
min_samples = {min_samples}                 # fewer samples: the ratio alone decides, with a warning
# drift_allowance = 0.20        # runs drift as a whole: the optimized/original ratio may move this much
# min_history_runs = 10         #   until the baseline's history holds this many runs (then learnt)
# absolute_drift_allowance = 1.0   # without that history, only a slowdown beyond this counts absolutely
psnr_min_db = 30.0              # quality regresses if an image vs the baseline's (same prompt and seed)
ssim_min = 0.90                 # falls below either of these
variant = "optimized"           # which variant is gated
on_environment_mismatch = "fail"   # baseline from another CPU/GPU: "fail" (exit 2) or "warn"

[baseline]
path = ".sdopt/baseline"        # written by `sdopt baseline save --results sdopt-out`; commit it
# git_ref = "origin/main"       # read `path` as committed on this ref instead of the PR's tree
"""


def _runs_on(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else "[" + ", ".join(labels) + "]"


def cache_version(o: InitOptions) -> str:
    """What the cache key says about sdopt's version: the action's ref (its release image holds
    that sdopt), or this sdopt's version for a local action (``./``)."""
    ref = o.action.partition("@")[2]
    return ref if ref else f"sdopt{__version__}"


def render_gate_workflow(o: InitOptions) -> str:
    w = o.workload()
    image = (f"          image: {o.image}\n" if o.image else
             "          # image: ghcr.io/org/sdopt-action@sha256:<digest>   # pinned: exactly "
             "that image (default: the action's release image)\n")
    key = f"sdopt-{cache_version(o)}-${{{{ runner.os }}}}-${{{{ runner.arch }}}}-"
    return f"""\
# Pull request gate (written by `sdopt init`): optimize, benchmark, compare with the baseline,
# comment on the PR, fail on a real regression. Fork PRs get a read-only token: this job then
# writes the report to the job summary only, and sdopt-comment.yml comments from its artifact.
# Self-hosted GPU runners run the pull request's own code (its sdopt.toml, its model folder,
# this workflow as the PR changed it) with docker, on the machines that measure your baseline:
# require approval for workflows from fork pull requests (Settings > Actions > General), use
# ephemeral runners (a fresh machine per job), keep the baseline job on a runner group pull
# requests cannot use, and pin the image by digest (image: ghcr.io/org/sdopt-action@sha256:...;
# a tag is pulled on every run). See "Self-hosted GPU runners" in sdopt's docs/action.md.
name: sdopt gate
on:
  pull_request:
    # paths: ["sdopt.toml", "models/**"]   # run only when the model or its config changes

permissions:
  contents: write           # the comment's images on the sdopt-assets branch (image_hosting: none keeps this read)
  pull-requests: write      # the PR comment (read-only on forks: see sdopt-comment.yml)
  checks: write             # the check run with the verdict (check_run: false needs none)

concurrency:
  group: sdopt-${{{{ github.event.pull_request.number }}}}
  cancel-in-progress: true

jobs:
  gate:
    runs-on: {_runs_on(o.runs_on)}   # a GPU runner: [self-hosted, linux, gpu]; else CPU backends
{_comment(describe(w), "    ")}    timeout-minutes: {w.timeout_minutes()}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0                 # the PR's base commit: same_job (default auto) measures it beside the head
      # Warm caches: sdopt's searches and exports (SDOPT_CACHE) and the downloaded models
      # (HF_HOME), keyed on sdopt's version (the action's ref), the runner and the config (its
      # model reference); saved even when the gate failed.
      - id: cache
        uses: actions/cache/restore@v4
        with:
          path: ${{{{ runner.temp }}}}/sdopt-cache
          key: {key}${{{{ hashFiles('{CONFIG_NAME}') }}}}
          restore-keys: {key}
      - id: sdopt
        uses: {o.action}
        with:
          config: {CONFIG_NAME}
          # Noise controls: the PR's base commit is measured beside the head in this job (needs
          # fetch-depth: 0), so run-to-run drift cancels; true requires it, false never does it.
          same_job: auto
          # Where same-job mode cannot run, the stored baseline is read as committed on the PR's
          # target branch, never from the PR's own tree (which the PR can edit).
          config_overrides: baseline.git_ref = "origin/${{{{ github.base_ref }}}}"
          # history_branch: sdopt-history   # the report's trend chart from a results history on
          #                                 # this orphan branch; add `push: branches: [main]` to
          #                                 # `on:` (only pushes to the default branch add runs;
          #                                 # pull requests only read it; sdopt's docs/history.md)
          gpus: auto
          cache: ${{{{ runner.temp }}}}/sdopt-cache
          comment: always                # or on-change, on-regression, never
          artifact_name: sdopt-results   # uploaded by the action, linked from the comment
{image}      - uses: actions/cache/save@v4
        if: always() && steps.cache.outputs.cache-hit != 'true'
        with:
          path: ${{{{ runner.temp }}}}/sdopt-cache
          key: ${{{{ steps.cache.outputs.cache-primary-key }}}}
      - if: always()
        env:  # values reach the shell as variables, never spliced into the script
          VERDICT: ${{{{ steps.sdopt.outputs.verdict }}}}
          SPEEDUP: ${{{{ steps.sdopt.outputs.speedup }}}}
        run: echo "verdict=$VERDICT speedup=$SPEEDUP"
"""


def render_comment_workflow(o: InitOptions) -> str:
    image = o.comment_image or o.image
    image_line = (f"          image: {image}\n" if image else
                  "          # image: ghcr.io/org/sdopt-action:v1-cpu   # default: the action's "
                  "release image (CPU flavour)\n")
    return f"""\
# Comments on fork PRs (written by `sdopt init`). The pull_request run of sdopt-gate.yml had a
# read-only token; this workflow runs in the base repository with a write token once that run
# completes, downloads its artifact and comments. It never checks out or runs the PR's code: the
# action re-renders the report from the artifact's JSON, and only comments when the artifact's
# head SHA is the triggering run's.
name: sdopt comment
on:
  workflow_run:
    workflows: ["sdopt gate"]
    types: [completed]

permissions:
  actions: read             # download the other run's artifact
  contents: write           # the fork PR's comment images on the sdopt-assets branch
  pull-requests: write      # the comment
  checks: write             # the fork PR's check run (its own run's token could not create it)

jobs:
  comment:
    if: github.event.workflow_run.event == 'pull_request'
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: sdopt-results
          path: sdopt-artifact
          run-id: ${{{{ github.event.workflow_run.id }}}}
          github-token: ${{{{ github.token }}}}
      - uses: {o.action}
        with:
          mode: comment
          artifact_dir: sdopt-artifact
{image_line}          gpus: none
"""


def plan(o: InitOptions, *, workflows: bool = True) -> dict[str, str]:
    """Relative path -> text of every file init writes."""
    o.validate()
    files = {CONFIG_NAME: render_config(o)}
    if workflows:
        files[GATE_WORKFLOW] = render_gate_workflow(o)
        files[COMMENT_WORKFLOW] = render_comment_workflow(o)
    return files


def write(root: Path, files: dict[str, str], *, overwrite: bool = False) -> list[Path]:
    """Write ``files`` under ``root``; refuses to replace any existing one unless ``overwrite``
    (checked for all before writing any, so a refusal leaves the repository untouched)."""
    from ..store import atomic_write_text

    existing = [rel for rel in files if (root / rel).exists()]
    if existing and not overwrite:
        raise SdoptError(f"'{root / existing[0]}' already exists"
                         + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                         + ": pass --overwrite to replace them")
    written = []
    for rel, text in files.items():
        path = root / rel
        if path.is_dir():
            raise SdoptError(f"'{path}' is a directory: expected a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written
