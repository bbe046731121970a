"""What ``input_data`` may hold: prompts, and for image-to-image and inpainting pipelines their
start images and masks.

Speedster's ``input_data`` is a list of prompts, and it stays one for text-to-image pipelines.
Pipelines whose ``__call__`` takes an ``image`` (image-to-image, inpainting) also accept
``(prompt, image)`` pairs, inpainting ones ``(prompt, image, mask_image)`` triples, and either
a ``{"prompt": ..., "image": ..., "mask_image": ...}`` mapping; a plain prompt (or a pair without
a mask) gets sdopt's fixed default start image and mask (:func:`sdopt.models.default_image`,
:func:`sdopt.models.default_mask`), the same on every machine. An image is a PIL image, an
``H x W x 3`` array (uint8, or floats in [0, 1]) or the path of an image file; a mask is the same
with one channel (white, or 1, is repainted). Every image is brought to the search's size
(``height`` x ``width``; by default the first given image's size, rounded down to a multiple of
8), so that every recorded denoiser call has one shape, as backends that export a graph need.
The same images go to capture, to the end-to-end runs and into the decision cache's key.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SdoptError
from ..models import pipeline_inputs

SIDE_MULTIPLE = 8
_IMAGE_WORDS = "a PIL image, an H x W x 3 array or an image file path"
_MASK_WORDS = "a PIL image, an H x W array or an image file path"


@dataclass(frozen=True)
class PromptInput:
    """One entry of ``input_data``: the prompt, and the start image and mask when given (None:
    the pipeline's default, if it takes one)."""

    prompt: str
    image: Any = None  # PIL RGB image
    mask_image: Any = None  # PIL "L" image

    def pipeline_kwargs(self, pipe, height: int, width: int) -> dict[str, Any]:
        """Everything besides the prompt that ``pipe`` is called with for this entry."""
        return pipeline_inputs(pipe, height, width, image=self.image, mask_image=self.mask_image)

    def digest(self) -> list[str | None]:
        """The images' content hashes (None: the default), for the decision cache's key."""
        return [None if im is None else _pixels_hash(im) for im in (self.image, self.mask_image)]


def as_input(entry) -> PromptInput:
    """A prompt string or a PromptInput as a PromptInput (internal callers pass either)."""
    return entry if isinstance(entry, PromptInput) else PromptInput(str(entry))


def takes(pipe) -> tuple[bool, bool]:
    """Whether ``pipe``'s ``__call__`` takes an ``image`` and a ``mask_image``."""
    params = inspect.signature(type(pipe).__call__).parameters
    return "image" in params, "mask_image" in params


def expected_words(pipe) -> str:
    has_image, has_mask = takes(pipe)
    if has_mask:
        return "a prompt, a (prompt, image) pair or a (prompt, image, mask_image) triple"
    if has_image:
        return "a prompt or a (prompt, image) pair"
    return "a prompt string"


def check_input_data(input_data, pipe) -> list[PromptInput]:
    """``input_data`` as PromptInputs, or one SdoptError line naming the entry and what the
    pipeline expects."""
    if isinstance(input_data, (str, dict)):
        input_data = [input_data]
    if not isinstance(input_data, (list, tuple)):
        raise SdoptError(f"input_data is a {type(input_data).__name__}: expected a list of "
                         f"prompts (each {expected_words(pipe)})")
    if not input_data:
        raise SdoptError("input_data is empty: expected a list of at least one prompt")
    return [_entry(entry, pipe, f"input_data[{i}]") for i, entry in enumerate(input_data)]


def _entry(entry, pipe, where: str) -> PromptInput:
    has_image, has_mask = takes(pipe)
    name = type(pipe).__name__
    if isinstance(entry, dict):
        unknown = set(entry) - {"prompt", "image", "mask_image"}
        if unknown or "prompt" not in entry:
            raise SdoptError(f"{where} has keys {sorted(map(str, entry))}: expected 'prompt' "
                             "and optionally 'image' and 'mask_image'")
        prompt, image, mask = entry["prompt"], entry.get("image"), entry.get("mask_image")
    elif isinstance(entry, (tuple, list)):
        if not 1 <= len(entry) <= 3:
            raise SdoptError(f"{where} has {len(entry)} items: expected "
                             f"{expected_words(pipe)}")
        prompt, image, mask = (list(entry) + [None, None])[:3]
    else:
        prompt, image, mask = entry, None, None
    if not isinstance(prompt, str) or not prompt.strip():
        what = _short(prompt) if isinstance(prompt, str) else f"a {type(prompt).__name__}"
        where_prompt = where if prompt is entry else f"{where}'s prompt"
        raise SdoptError(f"{where_prompt} is {what}: expected {expected_words(pipe)}, with a "
                         "non-empty prompt string")
    if image is not None and not has_image:
        raise SdoptError(f"{where} gives an image, but {name} takes none: expected a prompt "
                         "string")
    if mask is not None and not has_mask:
        raise SdoptError(f"{where} gives a mask_image, but {name} takes none: expected "
                         f"{expected_words(pipe)}")
    if mask is not None and image is None:
        raise SdoptError(f"{where} gives a mask_image without an image: expected "
                         "(prompt, image, mask_image)")
    return PromptInput(prompt,
                       None if image is None else _load(image, f"{where} image", mask=False),
                       None if mask is None else _load(mask, f"{where} mask_image", mask=True))


def _short(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def load_image(value, where: str, *, mask: bool = False):
    """A PIL image (RGB, or L for a mask) from a PIL image, an array or a file path; an
    SdoptError starting with ``where`` when it is none of them or cannot be read."""
    return _load(value, where, mask=mask)


def _load(value, where: str, *, mask: bool):
    """A PIL image (RGB, or L for a mask) from what the user gave."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    words = _MASK_WORDS if mask else _IMAGE_WORDS
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise SdoptError(f"{where} '{path}' is not a file: expected {words}")
        try:
            with Image.open(path) as opened:
                opened.load()
                value = opened.copy()
        except (OSError, UnidentifiedImageError) as exc:
            raise SdoptError(f"{where} '{path}' cannot be read as an image: "
                             f"{type(exc).__name__}") from None
    if isinstance(value, Image.Image):
        return value.convert("L" if mask else "RGB")
    if isinstance(value, np.ndarray):
        return _from_array(value, where, mask=mask)
    try:  # a torch tensor, as an H x W (x C) array
        import torch

        if isinstance(value, torch.Tensor):
            return _from_array(value.detach().cpu().numpy(), where, mask=mask)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    raise SdoptError(f"{where} is a {type(value).__name__}: expected {words}")


def _from_array(array, where: str, *, mask: bool):
    import numpy as np
    from PIL import Image

    a = np.asarray(array)
    if mask and a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    shape_ok = a.ndim == 2 if mask else (a.ndim == 3 and a.shape[-1] == 3)
    if not shape_ok or min(a.shape[:2]) < 1:
        raise SdoptError(f"{where} is an array of shape {tuple(a.shape)}: expected "
                         f"{'H x W' if mask else 'H x W x 3'}")
    if a.dtype == np.uint8:
        pixels = a
    elif a.dtype == bool or np.issubdtype(a.dtype, np.floating):
        values = a.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise SdoptError(f"{where} has values outside [0, 1]: expected uint8 pixels or "
                             "floats from 0 to 1")
        pixels = np.round(values * 255).astype(np.uint8)
    else:
        raise SdoptError(f"{where} is an array of {a.dtype}: expected uint8 pixels or floats "
                         "from 0 to 1")
    return Image.fromarray(np.ascontiguousarray(pixels), "L" if mask else "RGB")


def first_image_size(inputs: list[PromptInput]) -> tuple[int, int] | None:
    """(height, width) of the first given start image, rounded down to a multiple of 8 (as
    diffusers' image processor does), or None when no image is given."""
    for item in inputs:
        if item.image is not None:
            w, h = item.image.size
            if min(h, w) < SIDE_MULTIPLE:
                raise SdoptError(f"the start image of '{item.prompt}' is {w}x{h} px: expected "
                                 f"at least {SIDE_MULTIPLE} px a side")
            return h - h % SIDE_MULTIPLE, w - w % SIDE_MULTIPLE
    return None


def fit(inputs: list[PromptInput], height: int, width: int) -> list[PromptInput]:
    """Every given image and mask at ``height`` x ``width`` (one shape for every call)."""
    from PIL import Image

    def resized(image, resample):
        if image is None or image.size == (width, height):
            return image
        return image.resize((width, height), resample)

    return [PromptInput(item.prompt, resized(item.image, Image.LANCZOS),
                        resized(item.mask_image, Image.NEAREST)) for item in inputs]


def has_images(inputs: list[PromptInput]) -> bool:
    return any(item.image is not None for item in inputs)


def image_sha256(image) -> str:
    """The sha256 (hex) of a decoded image: its mode, its size and its pixel bytes.

    The pixels, not the file: the same picture re-saved (other PNG compression, metadata, JPEG
    header fields, a copy made by git or an artifact store) hashes the same, an image given as
    an array or a PIL image (no file at all) hashes too, and any change a pipeline would see
    (one pixel, the size, RGB vs L) changes it. Hash the image as the pipeline gets it (after
    :func:`fit`): that is what makes two runs' pictures comparable."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _pixels_hash(image) -> str:
    return image_sha256(image)[:16]


# The names under which a run records its start images' and masks' hashes: results.json's
# ``config`` (sdopt.gate.results.IMAGE_HASH_KEYS), a search's result and a saved model's manifest.
START_IMAGE_HASH, MASK_IMAGE_HASH = "start_image_sha256", "mask_image_sha256"


def input_image_hashes(inputs) -> dict[str, list[str | None]]:
    """What identifies the start images and masks ``inputs`` were run with: for each, one
    :func:`image_sha256` per prompt of the pixels the pipeline was called with (after
    :func:`fit`), None where the prompt got sdopt's default. Nothing for no inputs.

    The one record of them everywhere: results.json's ``config`` (sdopt.gate.bench), which the
    gate compares (sdopt.gate.compare.input_image_differences) and the histories key their runs
    on (sdopt.gate.history.run_summary), and a search's result, which a saved model's manifest
    keeps (``search.input_images``)."""
    if not inputs:
        return {}

    def hashes(images) -> list[str | None]:
        return [None if image is None else image_sha256(image) for image in images]

    return {START_IMAGE_HASH: hashes(i.image for i in inputs),
            MASK_IMAGE_HASH: hashes(i.mask_image for i in inputs)}
