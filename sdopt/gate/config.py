"""``sdopt.toml``: what the CI gate measures, how, and what counts as a regression.

The file lives in the user's repository and is edited by hand, so every mistake must come back as
one line that names the file and the field (``sdopt.toml: bench.runs: ...``) rather than a
pydantic dump. Unknown fields are errors: a misspelt threshold silently falling back to its
default would make the gate lie.

Paths in the file (the model folder, the saved model, the baseline and output directories) are
relative to the file's own directory, so the gate behaves the same from any working directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, NamedTuple, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..deps import require
from ..errors import SdoptError

DEFAULT_CONFIG_NAME = "sdopt.toml"
# The pipelines a bench measures: the user's original and sdopt's optimized one.
BENCH_VARIANTS = ("original", "optimized")
Variant = Literal[BENCH_VARIANTS]


# torch.Generator.manual_seed takes any 64-bit value, signed or not; beyond that it crashes.
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1
# The largest image side a bench may ask for: far above any diffusion model's, far below what
# would only fail as an allocation error deep inside torch.
MAX_SIDE = 16384
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)]


class _Section(BaseModel):
    """Strict: ``runs = true`` is not 1 and ``"5"`` is not 5 (pydantic's lax mode would take
    both), and ``inf``/``nan`` (valid TOML floats) are never a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class BenchConfig(_Section):
    """What is generated and how often: every (prompt, seed) pair is one image."""

    prompts: list[str] = Field(default_factory=lambda: ["a photo of an astronaut riding a horse on mars"],
                               min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    height: Optional[int] = Field(default=None, gt=0, le=MAX_SIDE, multiple_of=8)
    width: Optional[int] = Field(default=None, gt=0, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(default=20, ge=1, le=1000)
    guidance_scale: float = Field(default=7.5, ge=0, le=1000)
    batch: int = Field(default=1, ge=1, le=64)
    # Timed repetitions of the whole prompt x seed set per variant; with one image that is also
    # the number of latency samples, and the Mann-Whitney test needs at least gate.min_samples.
    runs: int = Field(default=10, ge=1, le=10000)
    warmup: int = Field(default=1, ge=0, le=100)
    variants: list[Variant] = Field(default_factory=lambda: list(BENCH_VARIANTS), min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads (None: torch's default, capped at the container's CPU quota by
    # sdopt.cpu_threads). On a shared runner fewer threads than cores can be far steadier:
    # oversubscribed OpenMP threads spin and stall each other.
    threads: Optional[int] = Field(default=None, ge=1, le=1024)
    # Image-to-image and inpainting models: the start image and the mask (white is repainted),
    # image files relative to this file; one path for every prompt, or a list of one per prompt
    # in order (as `sdopt optimize --start-image/--mask-image`). Unset: sdopt's fixed default
    # start image and mask. The search gets the same images.
    start_image: Optional[Union[str, list[str]]] = None
    mask_image: Optional[Union[str, list[str]]] = None
    # Image paths must stay inside this file's folder: no absolute path, and no '..' or symbolic
    # link that leads out of it (a pull request's sdopt.toml must not make the gate read, and
    # publish, files elsewhere on the runner). true allows both.
    allow_outside_paths: bool = False

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str]) -> list[str]:
        for i, prompt in enumerate(value):
            if not prompt.strip():
                raise ValueError(f"prompt {i} is blank: expected non-empty text")
        return value

    @field_validator("start_image", "mask_image", mode="before")
    @classmethod
    def _image_paths(cls, value):
        if value is None:
            return value
        paths = value if isinstance(value, list) else [value]
        if not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            raise ValueError("expected an image file path (relative to this file) or a list of "
                             "one path per prompt")
        return value

    @model_validator(mode="after")
    def _images_per_prompt(self):
        if self.mask_image is not None and self.start_image is None:
            raise ValueError("mask_image is set without start_image: an inpainting mask needs "
                             "its start image")
        for name in ("start_image", "mask_image"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) not in (1, len(self.prompts)):
                raise ValueError(f"{name} lists {len(value)} paths for {len(self.prompts)} "
                                 "prompts: expected one path (for every prompt) or one per "
                                 "prompt")
        return self

    def image_paths(self, name: str) -> list[str | None]:
        """``start_image`` or ``mask_image`` as one entry per prompt (None: the default)."""
        value = getattr(self, name)
        if value is None:
            return [None] * len(self.prompts)
        paths = value if isinstance(value, list) else [value]
        return paths * len(self.prompts) if len(paths) == 1 else list(paths)

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a variant is listed twice")
        return value


class OptimizeConfig(_Section):
    """How the 'optimized' variant is obtained: a saved model, one named candidate, or a search."""

    saved_model: Optional[str] = None  # a directory written by sdopt.save_model / sdopt optimize
    candidate: Optional[str] = None  # e.g. "torch_eager/bf16": built without a search
    metric_drop_ths: Optional[float] = Field(default=None, ge=0, le=1)
    # "max": metric_drop_ths holds on every prompt's image; "mean": on their average.
    metric_aggregate: Literal["max", "mean"] = "max"
    optimization_time: Literal["constrained", "unconstrained"] = "constrained"
    backends: Optional[list[str]] = None
    ignore_compilers: Optional[list[str]] = None
    ignore_compressors: Optional[list[str]] = None
    steps: int = Field(default=10, ge=1, description="timesteps sampled for verification")
    repeats: int = Field(default=5, ge=1)
    time_budget_s: Optional[float] = Field(default=None, gt=0)
    exhaustive: bool = False  # every candidate, none skipped by a bound, no default budget

    @model_validator(mode="after")
    def _one_source(self):
        if self.saved_model and self.candidate:
            raise ValueError("saved_model and candidate are both set: give one of them (or "
                             "neither, to search)")
        return self


class GateConfig(_Section):
    """When a difference is a regression. Defaults follow asv: a factor AND significance."""

    # Latency regresses when median(current) / median(baseline) > 1 + latency_tolerance ...
    latency_tolerance: float = Field(default=0.10, ge=0, le=100)
    # ... and a one-sided Mann-Whitney U test says current is slower with p < alpha ...
    alpha: float = Field(default=0.01, gt=0, lt=1)
    # ... computed only when both sides have this many samples (else the ratio alone, warned).
    min_samples: int = Field(default=5, ge=2)
    # Runs of one machine drift as a whole (sdopt/gate/latency.py). Against a stored baseline,
    # the gate learns how far from the baseline's history of runs (sdopt baseline save adds
    # one) once it holds min_history_runs; until then a run-to-run drift up to drift_allowance
    # is not a regression (measured here: benchmarks/results/gate_noise.md).
    drift_allowance: float = Field(default=0.20, ge=0, le=10)
    min_history_runs: int = Field(default=10, ge=3, le=1000)
    # The absolute latency against a baseline of fewer runs: only a slowdown beyond this counts
    # (the drift of a whole run is unknown; same-job mode or a history catch smaller ones).
    absolute_drift_allowance: float = Field(default=1.0, ge=0, le=100)
    # Quality regresses when an image vs the baseline's (same prompt and seed) falls below these.
    psnr_min_db: float = Field(default=30.0, ge=0)
    ssim_min: float = Field(default=0.90, ge=-1, le=1)
    # Optional third check: cosine of the CLIP image embeddings >= clip_min (ONNX Runtime's SD
    # tests use 0.95). Needs a local CLIP model (transformers folder): clip_model, relative to
    # this file, or $SDOPT_CLIP_MODEL. Off when unset: nothing can be downloaded.
    clip_min: float | None = Field(default=None, ge=-1, le=1)
    clip_model: str | None = None
    # Which variant of the results is gated (the other is informative).
    variant: Variant = "optimized"
    on_environment_mismatch: Literal["fail", "warn"] = "fail"


class BaselineConfig(_Section):
    """Where the committed baseline lives, and optionally which git ref to read it from."""

    path: str = ".sdopt/baseline"
    git_ref: Optional[str] = None  # e.g. "origin/main": read `path` as committed there


# A branch name git and URLs both take as is (git check-ref-format, narrowed).
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def assets_branch_problem(name: str) -> str | None:
    """Why ``name`` cannot be the PR comment's assets branch (None: it can)."""
    if (len(name) > 100 or not _BRANCH.match(name) or ".." in name or name.endswith(".lock")
            or name.endswith(".")):
        return ("expected a branch name of letters, digits, '.', '_', '-' and '/' (no '..', "
                "at most 100 characters)")
    return None


def image_base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot prefix the comment's image links (None: it can)."""
    if not url.startswith(("https://", "http://")) or any(c.isspace() or c in "<>()\"'`"
                                                          for c in url):
        return "expected an http(s) URL without spaces, quotes, brackets or parentheses"
    return None


class ReportConfig(_Section):
    """How the reports look: a folder of templates searched before the built-in ones (relative
    to this file), so a team can restyle one partial without forking sdopt. Where the PR
    comment's sample images are hosted (docs/action.md, "Sample images"; the action's inputs
    of the same names override these)."""

    templates: Optional[str] = None
    image_hosting: Literal["branch", "url", "none"] = "branch"
    image_base_url: Optional[str] = None
    assets_branch: str = "sdopt-assets"
    assets_keep_runs: int = Field(default=20, ge=1, le=1000)
    assets_keep_days: int = Field(default=0, ge=0, le=3650)      # 0: no age limit

    @field_validator("image_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        problem = value is not None and image_base_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("assets_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        problem = assets_branch_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _url_needs_base(self):
        if self.image_hosting == "url" and not self.image_base_url:
            raise ValueError("image_hosting is url but image_base_url is not set: set it to "
                             "where the output directory's files are served")
        return self


class Config(_Section):
    model: str  # preset name, diffusers folder, .safetensors file or hub id
    revision: Optional[str] = None
    single_file_config: Optional[str] = None
    output_dir: str = "sdopt-out"
    bench: BenchConfig = Field(default_factory=BenchConfig)
    optimize: OptimizeConfig = Field(default_factory=OptimizeConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    # Directory the relative paths above are resolved against (set by load_config, not the file).
    root: str = Field(default=".", exclude=True)
    # What errors call the file (set by load_config/parse_config, not the file).
    source: str = Field(default=DEFAULT_CONFIG_NAME, exclude=True)

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty: expected a preset name, a diffusers folder, a "
                             ".safetensors file or a hub id")
        return value.strip()

    def resolve(self, relative: str | None) -> Path | None:
        """A path from the file, made absolute against the file's directory."""
        if relative is None:
            return None
        path = Path(relative).expanduser()
        return path if path.is_absolute() else Path(self.root) / path

    def local_file(self, relative: str, field: str, *, allow_outside: bool = False) -> Path:
        """An existing file the config names, resolved against the file's directory. Unless
        ``allow_outside``, it must stay inside that directory: an absolute path, or a '..' or
        symbolic link that leads out of it, is refused (one line naming the file and field)."""
        where = f"{self.source}: field '{field}'"
        path = Path(relative)
        root = Path(self.root).resolve()
        if not allow_outside:
            if path.is_absolute() or relative.startswith("~"):
                raise SdoptError(f"{where}: '{relative}' is not relative to the config's folder "
                                 f"'{root}': expected a path inside it (or set "
                                 "bench.allow_outside_paths = true)")
            target = (root / path).resolve()
            if not target.is_relative_to(root):
                raise SdoptError(f"{where}: '{relative}' leads outside the config's folder "
                                 f"'{root}' (through '..' or a symbolic link): expected a path "
                                 "inside it (or set bench.allow_outside_paths = true)")
        else:
            target = self.resolve(relative)
        if not target.is_file():
            raise SdoptError(f"{where}: '{relative}' is not a file (looked for '{target}'): "
                             "expected an image file")
        return target

    def model_ref(self) -> str:
        """The model reference with a relative folder made absolute (presets/hub ids as given)."""
        candidate = self.resolve(self.model)
        return str(candidate) if candidate is not None and candidate.exists() else self.model

    def public_dict(self) -> dict:
        """What results.json records as ``config``: the bench settings, flat, plus the rest."""
        bench = self.bench.model_dump()
        return {"model": self.model, "revision": self.revision,
                "single_file_config": self.single_file_config, **bench,
                "optimize": self.optimize.model_dump(), "gate": self.gate.model_dump(),
                "baseline": self.baseline.model_dump()}


# --- overrides: SECTION.KEY=VALUE on top of the file ---------------------------------------
# One implementation for `--set` (bench, gate, compare, reproduce), the threshold shortcuts
# (--latency-tolerance...) and the GitHub Action's inputs, so a value means the same everywhere
# and a bad one is reported the same way: naming what the user typed, not a temporary file.

SECTIONS = ("bench", "optimize", "gate", "baseline", "report")
# The fields outside any section that an override may set without a SECTION. prefix.
TOP_LEVEL_KEYS = ("model", "revision", "single_file_config", "output_dir")
# The gate thresholds every gate-running command also takes as options of their own.
THRESHOLD_SHORTCUTS = ("latency_tolerance", "psnr_min_db", "ssim_min")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class Override(NamedTuple):
    """One setting given on top of sdopt.toml."""

    key: str      # dotted: "bench.runs", or a top-level field: "model"
    value: Any    # the parsed TOML value
    toml: str     # the value as TOML text, to pass the override on (the action's config_overrides)
    source: str   # what the user wrote, for error messages: "--set 'bench.runs=0'"

    @property
    def line(self) -> str:
        """``key = value``, one line of the action's ``config_overrides`` input."""
        return f"{self.key} = {self.toml}"


def parse_override(text: str, *, source: str | None = None) -> Override:
    """``SECTION.KEY=VALUE`` (spaces around ``=`` allowed) with a TOML value; ``source`` names it
    in errors (default: ``--set 'TEXT'``)."""
    source = source or f"--set '{text}'"
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if (not sep or not raw or "\n" in text or "\r" in text or not _KEY.fullmatch(key)
            or key.split(".")[0] not in (SECTIONS if "." in key else TOP_LEVEL_KEYS)):
        raise SdoptError(f"{source}: expected SECTION.KEY=VALUE with a TOML value (SECTION: "
                         f"{', '.join(SECTIONS)}), e.g. 'bench.runs=5' or "
                         "'gate.variant=\"optimized\"'")
    tomllib = _toml_reader()
    try:
        table = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError:
        table = {}
    if list(table) != ["value"]:
        raise SdoptError(f"{source}: '{raw}' is not a TOML value (quote strings: "
                         f"{key}='\"{raw}\"')")
    return Override(key, table["value"], raw, source)


def make_override(key: str, value: bool | int | float | str, *, source: str) -> Override:
    """An override from an already typed value (a threshold option, an action input)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)  # repr of a float (inf and nan included) is a TOML float
    else:
        text = json.dumps(str(value))  # a JSON string is a TOML basic string
    return Override(key, value, text, source)


def apply_overrides(data: dict, overrides: Iterable[Override], *,
                    source: str = DEFAULT_CONFIG_NAME) -> dict:
    """A copy of the parsed table ``data`` with the overrides set, in order (the last wins)."""
    out = dict(data)
    for override in overrides:
        *section, key = override.key.split(".")
        node = out
        if section:
            table = out.get(section[0], {})
            if not isinstance(table, dict):
                raise SdoptError(f"{override.source}: '{section[0]}' in {source} is not a table")
            node = out[section[0]] = dict(table)
        node[key] = override.value
    return out


def _set_by(where: str, overrides: Sequence[Override]) -> str:
    for override in reversed(overrides):
        if where == override.key or where.startswith(override.key + "."):
            return f" (set by {override.source})"
    return ""


def _describe(exc: ValidationError, source: str, overrides: Sequence[Override] = ()) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    origin = _set_by(where, overrides)
    kind = err["type"]
    if kind == "extra_forbidden":
        return (f"{source}: unknown field '{where}'{origin}: check its spelling "
                "(see docs/gate.md)")
    if kind == "missing":
        return f"{source}: field '{where}' is required"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{source}: field '{where}'{origin}: {msg}{shown}{more}"


def parse_config(data: dict, *, source: str = DEFAULT_CONFIG_NAME, root: str | os.PathLike = ".",
                 overrides: Sequence[Override] = ()) -> Config:
    """Validate an already parsed TOML table, with ``overrides`` applied first; errors name
    ``source`` and the field (and the override that set it)."""
    if not isinstance(data, dict):
        raise SdoptError(f"{source}: expected a TOML table at the top level")
    for internal in ("root", "source"):
        if internal in data:
            raise SdoptError(f"{source}: unknown field '{internal}': check its spelling (see "
                             "docs/gate.md)")
    data = apply_overrides(data, overrides, source=source)
    try:
        return Config.model_validate({**data, "root": str(root), "source": str(source)})
    except ValidationError as exc:
        raise SdoptError(_describe(exc, source, overrides)) from None


def gate_settings(overrides: Sequence[Override] = ()) -> GateConfig:
    """The [gate] settings when there is no sdopt.toml (``sdopt compare`` without --config):
    the defaults, with ``gate.*`` overrides applied."""
    for override in overrides:
        if not override.key.startswith("gate."):
            raise SdoptError(f"{override.source}: without an sdopt.toml only gate.* settings "
                             "apply: pass --config")
    # `model` is required by the schema and unused by a comparison.
    return parse_config({"model": "unused"}, source="gate settings", overrides=overrides).gate


def _toml_reader():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    return require("tomli", "reading sdopt.toml on Python 3.10")  # tomllib, packaged as tomli


def load_config(path: str | os.PathLike, overrides: Sequence[Override] = ()) -> Config:
    """Read and validate ``sdopt.toml``, with ``overrides`` (from :func:`parse_override`)
    applied on top of the file's values."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_CONFIG_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SdoptError(f"config '{path}' not found: expected an sdopt.toml (see "
                         "examples/sdopt.toml)") from None
    except OSError as exc:
        raise SdoptError(f"config '{path}' cannot be read: {exc.strerror or exc}") from None
    tomllib = _toml_reader()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SdoptError(f"config '{path}' is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SdoptError(f"config '{path}' is not valid TOML: {exc}") from None
    return parse_config(data, source=str(path), root=path.resolve().parent, overrides=overrides)
