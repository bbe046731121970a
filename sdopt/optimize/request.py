"""One optimize_model call's arguments, checked once and kept together.

Speedster's signature is long and loosely typed (``metric`` a name or a callable, thresholds as
None or a number, Speedster's compiler names...). Every argument is checked here, each mistake
raised as one line naming the argument and what is expected, before anything slow starts.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..backends.base import Variant
from ..cpu_threads import fit_torch_threads
from ..device import DeviceInfo, detect
from ..errors import SdoptError
from .metrics import METRICS, Metric, resolve_metric, validate_aggregate, validate_threshold
from ..models import denoiser_of
from .capture import native_side
from .inputs import PromptInput, check_input_data, first_image_size, fit, has_images
from .optimized import optimized_unet_of
from .search import named_variant_ids, plan_candidates

OPTIMIZATION_TIMES = ("constrained", "unconstrained")
# The time a search may take unless time_budget_s says otherwise (exhaustive searches: none). The
# budget is checked before each candidate: the one running finishes, the rest are skipped, saying
# so, and the best found so far is the pick. The default is at least these seconds and at least
# BUDGET_PER_CAPTURE times what the search's first stage took (running the original pipeline over
# the prompts, warm-up included), so that a large model's search is not spent before it starts.
# The sd15 demo (256 px, 4 steps, 3 prompts) on 2 Intel AMX cores, cold (docs/benchmarks.md):
# a 90 s first stage (fp32 images of 24 s), the UNet pick (OpenVINO min/max int8-inner) found
# about 110 s later. With 5x (450 s) the search took 467 s; with this default, 240 s, it took
# 323 s (the side-by-side rounds run after the budget) and its pick's UNet ran 1.03x the
# exhaustive search's pick's; the budget cut the OpenVINO VAE decoder and text encoder settings
# that the exhaustive pick has.
DEFAULT_TIME_BUDGET_S = {"constrained": 240.0, "unconstrained": 1800.0}
BUDGET_PER_CAPTURE = {"constrained": 3.0, "unconstrained": 10.0}
# diffusers' check_inputs demands image sides that are multiples of this.
SIDE_MULTIPLE = 8


@dataclass(frozen=True)
class SearchRequest:
    prompts: list[str]
    inputs: list[PromptInput]  # the prompts with their start images and masks (None: default)
    metric_drop_ths: float | None
    metric_aggregate: str  # "max": every prompt within the threshold; "mean": their average
    metric: Metric  # what candidates are judged by (UNet outputs or images)
    image_metric: Metric  # what end-to-end (technique) candidates are judged by
    optimization_time: str
    device: DeviceInfo
    variants: list[Variant]
    # The variants the user named one by one (search.named_variant_ids)
    named_ids: frozenset[str]
    height: int
    width: int
    steps: int
    guidance_scale: float
    seed: int
    n_verify: int
    repeats: int
    time_budget_s: float | None
    # time_budget_s is the default: it grows with the first stage's time (BUDGET_PER_CAPTURE)
    budget_is_default: bool
    exhaustive: bool  # every candidate, in the registry's order, none skipped by a bound
    end_to_end: bool
    reuse_search: bool

    @property
    def reusable(self) -> bool:
        """A cached decision may stand in for this search: reuse is on and every metric is
        built in (a user callable has no identity a cache key could hold)."""
        return self.reuse_search and all(
            m.name in METRICS and METRICS[m.name] is m for m in (self.metric, self.image_metric))

    def settings(self) -> dict[str, Any]:
        """What the decision cache keys on, besides the models and the machine (the given start
        images and masks by content; none given: the key is the one of plain prompts)."""
        images = {"images": [i.digest() for i in self.inputs]} if has_images(self.inputs) else {}
        return dict(prompts=self.prompts, **images, height=self.height, width=self.width,
                    steps=self.steps, guidance_scale=self.guidance_scale, seed=self.seed,
                    n_verify=self.n_verify, repeats=self.repeats,
                    time_budget_s=self.time_budget_s, exhaustive=self.exhaustive,
                    variants=[v.id for v in self.variants],
                    # absent when none: the keys of earlier searches stay valid
                    **({"named": sorted(self.named_ids)} if self.named_ids else {}),
                    metric=self.metric.name, image_metric=self.image_metric.name,
                    metric_drop_ths=self.metric_drop_ths,
                    metric_aggregate=self.metric_aggregate,
                    optimization_time=self.optimization_time, end_to_end=self.end_to_end)


def check_pipe(model, what: str = "model") -> torch.nn.Module:
    """The pipeline's denoiser (UNet or transformer), refusing what is not an original
    diffusers pipeline."""
    if optimized_unet_of(model) is not None:
        raise SdoptError(f"{what} already holds an sdopt-optimized UNet: pass the original pipeline")
    unet = denoiser_of(model)
    if not isinstance(unet, torch.nn.Module) or not callable(model):
        raise SdoptError(f"{what} is a {type(model).__name__}: expected a diffusers Stable "
                         "Diffusion pipeline (an object with a .unet or a .transformer, called "
                         "with a prompt)")
    return unet


def check_prompts(input_data) -> list[str]:
    """Plain prompts (text-to-image): input_data checked without a pipeline."""
    if isinstance(input_data, str):
        input_data = [input_data]
    if not isinstance(input_data, (list, tuple)):
        raise SdoptError(f"input_data is a {type(input_data).__name__}: expected a list of prompts")
    if not input_data:
        raise SdoptError("input_data is empty: expected a list of at least one prompt")
    for i, prompt in enumerate(input_data):
        if not isinstance(prompt, str) or not prompt.strip():
            raise SdoptError(f"input_data[{i}] is {prompt!r}: expected a non-empty prompt string")
    return list(input_data)


def _image_metrics(metric, image_metric) -> tuple[Metric, Metric]:
    chosen = resolve_metric(metric)
    gate = chosen if chosen.kind == "image" else resolve_metric(image_metric)
    if gate.kind != "image":
        raise SdoptError(f"image_metric '{gate.name}' compares UNet outputs: expected one of "
                         "psnr, ssim, clip_cosine, clip_score or "
                         "sdopt.optimize.metrics.image_metric(fn)")
    return chosen, gate


def _positive_ints(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise SdoptError(f"{name} is {value!r}: expected a positive integer")


def _side(name: str, value) -> int:
    if not isinstance(value, int) or value <= 0 or value % SIDE_MULTIPLE:
        raise SdoptError(f"{name} is {value!r}: expected a positive multiple of {SIDE_MULTIPLE} "
                         "(diffusers requires it)")
    return value


def _budget(time_budget_s, optimization_time: str, exhaustive: bool) -> float | None:
    if time_budget_s is not None:
        if isinstance(time_budget_s, bool) or not isinstance(time_budget_s, (int, float)) \
                or not time_budget_s > 0:
            raise SdoptError(f"time_budget_s is {time_budget_s!r}: expected a positive number of "
                             "seconds (or None: the default for optimization_time)")
        return float(time_budget_s)
    return None if exhaustive else DEFAULT_TIME_BUDGET_S[optimization_time]


def _reuse_default(reuse_search: bool | None) -> bool:
    if reuse_search is not None:
        return bool(reuse_search)
    return os.environ.get("SDOPT_REUSE_SEARCH", "1").strip().lower() not in (
        "0", "false", "no", "off")


def build_request(model, input_data, *, metric_drop_ths, metric_aggregate, metric,
                  optimization_time,
                  dynamic_info, config_file, ignore_compilers, ignore_compressors, device,
                  backends, height, width, num_inference_steps, guidance_scale, seed, n_verify,
                  repeats, time_budget_s, image_metric, end_to_end,
                  reuse_search, exhaustive=False) -> SearchRequest:
    """Check every argument of optimize_model (Speedster's and ours) and resolve the defaults."""
    check_pipe(model)
    inputs = check_input_data(input_data, model)
    ths = validate_threshold(metric_drop_ths)
    aggregate = validate_aggregate(metric_aggregate)
    chosen, gate = _image_metrics(metric, image_metric)
    end_to_end = True if end_to_end is None else end_to_end
    if not end_to_end and (chosen.kind == "image" or optimization_time == "unconstrained"):
        raise SdoptError("end_to_end=False: image metrics and optimization_time='unconstrained' "
                         "judge whole pipelines end to end; leave end_to_end on")
    if optimization_time not in OPTIMIZATION_TIMES:
        raise SdoptError(f"optimization_time '{optimization_time}' is not known: expected "
                         f"{' or '.join(OPTIMIZATION_TIMES)}")
    if config_file is not None:
        raise SdoptError("config_file is not supported by sdopt: pass the options as arguments "
                         "(or use sdopt.toml with the CLI)")
    if dynamic_info is not None:
        warnings.warn("sdopt: dynamic_info is ignored; shapes come from running the pipeline at "
                      "height x width", stacklevel=3)
    dev = detect(device)
    fit_torch_threads()
    _positive_ints(num_inference_steps=num_inference_steps, n_verify=n_verify, repeats=repeats)
    native = native_side(model)
    # Start images given: their size by default (img2img makes images of its input's size).
    given = first_image_size(inputs) or (None, None)
    height = _side("height", height or given[0] or native)
    width = _side("width", width or given[1] or native)
    inputs = fit(inputs, height, width)
    variants = plan_candidates(dev, backends=backends, ignore_compilers=ignore_compilers,
                               ignore_compressors=ignore_compressors)
    return SearchRequest(
        prompts=[i.prompt for i in inputs], inputs=inputs, metric_drop_ths=ths,
        metric_aggregate=aggregate, metric=chosen, image_metric=gate,
        optimization_time=optimization_time, device=dev, variants=variants,
        named_ids=named_variant_ids(dev, backends), height=height, width=width, steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
        n_verify=n_verify, repeats=repeats, exhaustive=bool(exhaustive),
        time_budget_s=_budget(time_budget_s, optimization_time, exhaustive),
        budget_is_default=time_budget_s is None and not exhaustive,
        end_to_end=end_to_end, reuse_search=_reuse_default(reuse_search))
