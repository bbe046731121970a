"""Quality metrics, each expressed as a *drop* (0 = identical) so one threshold means one thing.

``numeric_precision`` (the default, as in Speedster) compares UNet noise predictions of a
candidate with those of the original pipeline on held-out inputs sampled over the whole timestep
range. Speedster's own formula (the *maximum* element-wise relative difference, at the first
timestep only) is dominated by near-zero elements and by one step, so that no reduced precision
passes any sensible threshold; ours is the relative L1 error

    drop = mean(|reference - candidate|) / mean(|reference|)

averaged over the held-out inputs of each prompt. bf16 weights give about 0.01 on SD 1.5;
Speedster's Stable Diffusion guide uses ``metric_drop_ths=0.05`` to 0.1.

Every metric is kept per prompt (a prompt's image, or a prompt's held-out UNet calls) and the
threshold holds on the *worst* prompt by default (``metric_aggregate="max"``): a gate that
promises no silent quality loss cannot let a good prompt pay for a bad one. ``"mean"`` (the
average over prompts, the rule before) is an explicit opt-in.

Image metrics compare what users see: images the original pipeline and a candidate make for the
same prompts, seeds and sizes (uint8 ``H x W x 3`` arrays). Each is turned into a drop so that one
``metric_drop_ths`` works for all (see docs/quality.md for the references behind the defaults):

- ``psnr``: drop = RMSE / 255 = 10 ** (-PSNR / 20), the root-mean-square pixel error as a
  fraction of the full range; a bijection with PSNR in dB (35 dB, Apple's ml-stable-diffusion
  conversion check, is a drop of 0.0178; 30 dB is 0.0316; 20 dB is 0.1). scikit-image computes
  the PSNR.
- ``ssim``: drop = 1 - SSIM (scikit-image, per channel, Gaussian-free 7x7 window).
- ``clip_cosine``: drop = 1 - cosine of the CLIP image embeddings (ONNX Runtime's SD tests
  require a cosine >= 0.95, a drop <= 0.05); ``clip_score``: the fall of the CLIP score
  (100 x cosine of image and prompt embeddings, Hessel et al. 2021) divided by 100. Both need a
  local CLIP model (``SDOPT_CLIP_MODEL`` or :func:`configure_clip`): nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from ..deps import require
from ..errors import SdoptError
from ..logs import quiet_torchvision_notes

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def numeric_precision(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    reference = reference.detach().double()
    candidate = candidate.detach().double()
    if reference.shape != candidate.shape:
        raise ValueError(f"output shape {tuple(candidate.shape)} differs from the reference "
                         f"{tuple(reference.shape)}")
    if not torch.isfinite(candidate).all():
        return float("inf")
    scale = reference.abs().mean().clamp_min(1e-12)
    return float((reference - candidate).abs().mean() / scale)


@dataclass(frozen=True)
class Metric:
    """``kind`` says what ``fn`` compares: "unet" (noise predictions, ``fn(reference,
    candidate)``) or "image" (uint8 images, ``fn(reference, candidate, prompt)``)."""

    name: str
    fn: Callable[..., float]
    doc: str
    kind: str = "unet"
    default_threshold: float | None = None
    needs_clip: bool = False


def _as_image(image, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} has shape {array.shape}: expected an H x W x C image")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(array.max()) <= 1.0:
            array = np.round(np.clip(array, 0.0, 1.0) * 255.0)  # diffusers' output_type="np"
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def _pair(reference, candidate) -> tuple[np.ndarray, np.ndarray]:
    ref, cand = _as_image(reference, "reference image"), _as_image(candidate, "candidate image")
    if ref.shape != cand.shape:
        raise ValueError(f"candidate image shape {cand.shape} differs from the reference "
                         f"{ref.shape}: compare images made at the same size")
    return ref, cand


def psnr_db(reference, candidate) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    from skimage.metrics import peak_signal_noise_ratio

    ref, cand = _pair(reference, candidate)
    if np.array_equal(ref, cand):
        return math.inf
    return float(peak_signal_noise_ratio(ref, cand, data_range=255))


def psnr_drop(reference, candidate, prompt: str | None = None) -> float:
    """RMSE as a fraction of the pixel range: 10 ** (-PSNR / 20); 0 for identical images."""
    db = psnr_db(reference, candidate)
    return 0.0 if math.isinf(db) else float(10.0 ** (-db / 20.0))


def psnr_drop_to_db(drop: float | None) -> float | None:
    if drop is None:
        return None
    return math.inf if drop <= 0 else -20.0 * math.log10(drop)


def ssim_drop(reference, candidate, prompt: str | None = None) -> float:
    """1 - SSIM (scikit-image, channels averaged); 0 for identical images."""
    from skimage.metrics import structural_similarity

    ref, cand = _pair(reference, candidate)
    if np.array_equal(ref, cand):
        return 0.0
    side = min(ref.shape[0], ref.shape[1])
    win = min(7, side if side % 2 else side - 1)
    value = structural_similarity(ref, cand, data_range=255, channel_axis=-1, win_size=win)
    return max(0.0, 1.0 - float(value))


# --- CLIP (only from a local model: nothing can be downloaded) -------------------------------

CLIP_ENV = "SDOPT_CLIP_MODEL"
_clip_path: str | None = None
_clip_cache: dict[str, Any] = {}


def configure_clip(path: str | os.PathLike | None) -> None:
    """Use the CLIP model in this local folder (transformers format) for the CLIP metrics."""
    global _clip_path
    _clip_path = None if path is None else str(path)


def clip_model_path() -> str | None:
    return _clip_path or os.environ.get(CLIP_ENV) or None


def clip_unavailable_reason() -> str | None:
    path = clip_model_path()
    if not path:
        return (f"no local CLIP model configured (set {CLIP_ENV} or call "
                "sdopt.optimize.metrics.configure_clip(path)); none can be downloaded here")
    if not os.path.isdir(path):
        return f"CLIP model folder '{path}' ({CLIP_ENV}) does not exist"
    return None


def _clip():
    reason = clip_unavailable_reason()
    if reason:
        raise SdoptError(f"CLIP metrics: {reason}")
    path = clip_model_path()
    if path not in _clip_cache:
        transformers = require("transformers", "CLIP metrics")
        with quiet_torchvision_notes():  # CLIPProcessor's image processor falls back to PIL
            CLIPModel, CLIPProcessor = transformers.CLIPModel, transformers.CLIPProcessor
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
            processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SdoptError(f"CLIP model folder '{path}' could not be loaded: "
                             f"{str(exc).splitlines()[0]}") from exc
        _clip_cache.clear()
        _clip_cache[path] = (model, processor)
    return _clip_cache[path]


def _embed_image(image: np.ndarray) -> torch.Tensor:
    model, processor = _clip()
    with torch.inference_mode():
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        feats = model.get_image_features(pixel_values=pixels)
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float(), dim=-1)[0]


def _embed_text(text: str) -> torch.Tensor:
    model, processor = _clip()
    with torch.inference_mode():
        tokens = processor(text=[text], return_tensors="pt", padding="max_length",
                           truncation=True)
        feats = model.get_text_features(input_ids=tokens["input_ids"],
                                        attention_mask=tokens.get("attention_mask"))
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float(), dim=-1)[0]


def clip_cosine_drop(reference, candidate, prompt: str | None = None) -> float:
    """1 - cosine similarity of the CLIP image embeddings; 0 for identical images."""
    ref, cand = _pair(reference, candidate)
    if np.array_equal(ref, cand):
        return 0.0
    cos = float(_embed_image(ref) @ _embed_image(cand))
    return max(0.0, 1.0 - cos)


def clip_score(image, prompt: str) -> float:
    """CLIP score: 100 x max(cosine(image, prompt), 0) (Hessel et al. 2021)."""
    return 100.0 * max(0.0, float(_embed_image(_as_image(image, "image")) @ _embed_text(prompt)))


def clip_score_drop(reference, candidate, prompt: str | None = None) -> float:
    """How much the candidate's CLIP score falls below the original's, divided by 100."""
    if not prompt:
        raise ValueError("clip_score needs the prompt the images were made for")
    ref, cand = _pair(reference, candidate)
    if np.array_equal(ref, cand):
        return 0.0
    return max(0.0, clip_score(ref, prompt) - clip_score(cand, prompt)) / 100.0


METRICS: dict[str, Metric] = {
    "numeric_precision": Metric(
        "numeric_precision", numeric_precision,
        "relative L1 error of UNet noise predictions vs the original, over sampled timesteps",
        default_threshold=0.05),
    "psnr": Metric(
        "psnr", psnr_drop, "image RMSE / 255 = 10^(-PSNR/20); 0.0178 is 35 dB", kind="image",
        default_threshold=round(10 ** (-35 / 20), 4)),
    "ssim": Metric("ssim", ssim_drop, "1 - SSIM of the images", kind="image",
                   default_threshold=0.1),
    "clip_cosine": Metric(
        "clip_cosine", clip_cosine_drop, "1 - cosine of CLIP image embeddings", kind="image",
        default_threshold=0.05, needs_clip=True),
    "clip_score": Metric(
        "clip_score", clip_score_drop, "fall of the CLIP score (image vs prompt) / 100",
        kind="image", default_threshold=0.01, needs_clip=True),
}


def image_metric(fn: Callable[..., float], name: str | None = None) -> Metric:
    """Mark a user callable ``fn(reference_image, candidate_image, prompt) -> drop`` as an image
    metric (plain callables passed as ``metric=`` compare UNet outputs, as in Speedster)."""
    return Metric(name or getattr(fn, "__name__", type(fn).__name__), fn, "user image metric",
                  kind="image")


def score_images(reference: Sequence, candidate: Sequence, prompts: Sequence[str],
                 metrics: Sequence[Metric]) -> dict[str, dict[str, float]]:
    """Mean and worst drop of each metric over image pairs; PSNR also in dB."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} candidate images for {len(reference)} references")
    out: dict[str, dict[str, float]] = {}
    for metric in metrics:
        drops = [float(metric.fn(r, c, p)) for r, c, p in zip(reference, candidate, prompts)]
        out[metric.name] = {"mean": float(np.mean(drops)), "max": float(np.max(drops))}
        if metric.fn is psnr_drop:  # identical images: no finite dB (JSON has no Infinity)
            db = psnr_drop_to_db(out[metric.name]["mean"])
            out[metric.name]["db"] = None if math.isinf(db) else db
    return out

# How the per-prompt drops are combined before the threshold applies (see the module docstring).
METRIC_AGGREGATES = ("max", "mean")
DEFAULT_AGGREGATE = "max"


def validate_aggregate(value) -> str:
    """metric_aggregate: "max" (every prompt within the threshold) or "mean"."""
    if not isinstance(value, str) or value not in METRIC_AGGREGATES:
        raise SdoptError(f"metric_aggregate is {value!r}: expected \"max\" (every prompt within "
                         "metric_drop_ths, the default) or \"mean\" (their average)")
    return value


def per_prompt_drops(drops: Sequence[float], prompt_indices: Sequence[int]) -> list[float]:
    """The mean drop of each prompt's held-out UNet calls (in prompt order): the UNet metric's
    counterpart of one drop per image."""
    by_prompt: dict[int, list[float]] = {}
    for drop, index in zip(drops, prompt_indices):
        by_prompt.setdefault(index, []).append(drop)
    return [sum(v) / len(v) for _, v in sorted(by_prompt.items())]


# Below this a candidate counts as numerically identical (float reassociation in compilers).
LOSSLESS_TOLERANCE = 1e-3


def resolve_metric(metric: Union[str, MetricFn, Metric, None]) -> Metric:
    """A metric name, a user callable ``(reference, candidate) -> drop`` (UNet outputs), a
    :class:`Metric` (e.g. from :func:`image_metric`), or None (default)."""
    if metric is None:
        return METRICS["numeric_precision"]
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric in METRICS and METRICS[metric].needs_clip:
        reason = clip_unavailable_reason()
        if reason:
            raise SdoptError(f"metric '{metric}' cannot be computed: {reason}")
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        return Metric(name, metric, "user-supplied metric")
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise SdoptError(f"unknown metric '{metric}': expected one of {', '.join(METRICS)} or a "
                     "callable (reference, candidate) -> drop")


def validate_threshold(value) -> float | None:
    """metric_drop_ths: None (only lossless candidates) or a number in [0, 1]."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SdoptError(f"metric_drop_ths '{value}' is not a number: expected a value between 0 "
                         "and 1 (for example 0.05), or None for lossless only") from None
    if not 0.0 <= number <= 1.0 or number != number:
        raise SdoptError(f"metric_drop_ths {value} is out of range: expected a value between 0 "
                         "and 1 (for example 0.05), or None for lossless only")
    return number
