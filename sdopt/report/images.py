"""Sample images for the report: embedded as data URIs, compared pixel by pixel.

The HTML report must open offline from a CI artifact, so every image travels inside it. Paths
come from results.json, a file anyone can edit in a pull request: an image is only read from
inside the directory its results.json lives in, never from elsewhere on the runner.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..optimize import metrics

# Pixel difference (0..255) shown at full brightness in the heat map. A fixed scale, so that two
# heat maps in one report can be compared and identical images stay black.
HEAT_FULL_SCALE = 64
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# "inferno"-like stops: black, purple, red, orange, pale yellow.
_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                  dtype=np.float64)


@dataclass
class LoadedImage:
    path: str
    array: np.ndarray | None = None  # H x W x 3 uint8
    data_uri: str | None = None
    error: str | None = None


def resolve_inside(base_dir: Path, relative: str) -> Path | None:
    """``relative`` under ``base_dir``, or None when it points outside it."""
    base = base_dir.resolve()
    target = (base / relative).resolve()
    return target if target == base or base in target.parents else None


def load_image(base_dir: Path | None, relative) -> LoadedImage:
    shown = str(relative)
    if base_dir is None or not isinstance(relative, str) or not relative:
        return LoadedImage(shown, error="no image path recorded")
    path = resolve_inside(base_dir, relative)
    if path is None:
        return LoadedImage(shown, error="refused: the path leaves the results directory")
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as img:
            fmt = img.format
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        return LoadedImage(shown, error="file not found")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return LoadedImage(shown, error=f"not a readable image ({type(exc).__name__})")
    if fmt not in _MIME:
        raw, fmt = encode_png(array), "PNG"
    return LoadedImage(shown, array, f"data:{_MIME[fmt]};base64,{base64.b64encode(raw).decode()}")


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_data_uri(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(array)).decode()


def heat_map(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Mean absolute difference over the colour channels, coloured black (equal) to pale
    yellow (|difference| >= HEAT_FULL_SCALE)."""
    diff = np.abs(reference.astype(np.int16) - candidate.astype(np.int16)).mean(axis=-1)
    t = np.clip(diff / HEAT_FULL_SCALE, 0.0, 1.0) * (len(_STOPS) - 1)
    low = np.floor(t).astype(int).clip(0, len(_STOPS) - 2)
    frac = (t - low)[..., None]
    rgb = _STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


@dataclass
class Comparison:
    heat_uri: str | None
    psnr_db: float | None  # inf: identical images
    ssim: float | None
    max_abs: int | None
    error: str | None = None


def compare(reference: LoadedImage | np.ndarray,
            candidate: LoadedImage | np.ndarray) -> Comparison:
    """Heat map, PSNR, SSIM and largest pixel difference of a pair; PSNR and SSIM come from
    sdopt.optimize.metrics, the code the search and the gate judge with, so a number in the
    report is the number that decided."""
    a, b = (x.array if isinstance(x, LoadedImage) else np.asarray(x)
            for x in (reference, candidate))
    if a is None or b is None:
        return Comparison(None, None, None, None, "an image is missing")
    if a.shape != b.shape:
        return Comparison(None, None, None, None,
                          f"sizes differ ({a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]})")
    return Comparison(png_data_uri(heat_map(a, b)), metrics.psnr_db(a, b),
                      1.0 - metrics.ssim_drop(a, b),
                      int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
