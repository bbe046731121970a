"""The PR comment's sample images: per prompt the original, optimized and baseline images and a
difference map, downscaled and encoded small enough to publish for a comment.

The comment cannot carry images itself (GitHub renders no ``data:`` URIs and caps a comment at
65,536 characters), so these files are hosted somewhere and linked. They are made from the
results directory, which may be a fork's artifact: an image is read only from a regular file
inside that directory (no link anywhere on its path, no ``..``), no larger than
MAX_SOURCE_BYTES, decoded by Pillow as one of a few image formats within MAX_SOURCE_PIXELS, and
re-encoded here, so that what is published is always pixels we encoded, never a file's bytes.
The whole selection stays within a byte budget: a prompt whose images do not fit is left out
(with a note), never half shown.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .images import heat_map

KINDS = ("original", "optimized", "baseline", "difference")
FORMATS = {"webp": "WEBP", "png": "PNG"}
DEFAULT_FORMAT = "webp"
THUMB_SIDE = 256                  # longest side of a thumbnail, pixels
DEFAULT_BUDGET = 1_500_000        # bytes of images per comment
MAX_PROMPTS = 8
READ_FACTOR = 2                   # prompts read at most: READ_FACTOR * max_prompts
# A source image larger than this is refused before it is read (sdopt writes PNGs of a few
# hundred KB at 512 px; 16 MB is a 2048 px image with room to spare).
MAX_SOURCE_BYTES = 16 * 1024 * 1024
MAX_SOURCE_PIXELS = 4096 * 4096   # refused before decoding: no decompression bomb
SOURCE_FORMATS = ("PNG", "JPEG", "WEBP")


class ImageRefused(ValueError):
    """One line saying which file was refused and why."""


@dataclass
class Thumbnail:
    name: str       # "<row>-<kind>.<ext>": made here, never taken from a file name
    kind: str
    data: bytes


@dataclass
class SampleRow:
    prompt: str
    seed: object
    names: dict[str, str] = field(default_factory=dict)    # kind -> Thumbnail.name


@dataclass
class Selection:
    rows: list[SampleRow] = field(default_factory=list)
    files: list[Thumbnail] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)         # one line per refusal or omission
    fmt: str = DEFAULT_FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.files)

    @property
    def columns(self) -> list[str]:
        return [k for k in KINDS if any(k in r.names for r in self.rows)]


def _inside_without_links(base_dir: Path, relative: str) -> Path:
    """The path of ``relative`` under ``base_dir`` when no component is a link and it does not
    leave the directory; ImageRefused otherwise."""
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts:
        raise ImageRefused(f"'{relative}': refused, the path leaves the results directory")
    path = base_dir
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise ImageRefused(f"'{relative}': file not found") from None
        if stat.S_ISLNK(mode):
            raise ImageRefused(f"'{relative}': refused, a symbolic link is never followed")
    if not stat.S_ISREG(mode):
        raise ImageRefused(f"'{relative}': refused, not a regular file")
    return path


def read_untrusted_image(base_dir: Path, relative) -> np.ndarray:
    """The RGB pixels of an image file named in a results.json that may come from a fork."""
    if not isinstance(relative, str):
        raise ImageRefused(f"'{relative}': no image path recorded")
    path = _inside_without_links(Path(base_dir), relative)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_SOURCE_BYTES:
            raise ImageRefused(f"'{relative}': refused, {size:,} bytes is over the "
                               f"{MAX_SOURCE_BYTES:,}-byte limit for one image")
        raw = fh.read(MAX_SOURCE_BYTES + 1)
    try:
        with Image.open(io.BytesIO(raw), formats=SOURCE_FORMATS) as img:
            width, height = img.size
            if width * height > MAX_SOURCE_PIXELS:
                raise ImageRefused(f"'{relative}': refused, {width}x{height} pixels is over "
                                   f"the limit of {MAX_SOURCE_PIXELS:,}")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ImageRefused:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRefused(f"'{relative}': refused, not a readable PNG, JPEG or WebP image "
                           f"({type(exc).__name__})") from None


def encode_thumbnail(array: np.ndarray, fmt: str = DEFAULT_FORMAT,
                     side: int = THUMB_SIDE, *, lossless: bool = False) -> bytes:
    """``array`` downscaled to ``side`` pixels on its longest side (never up) and encoded.
    WebP at quality 90 keeps a photo-like thumbnail's look at a fraction of PNG's size (so
    more prompts fit the budget); ``lossless`` is for the difference map, whose exact levels
    are the information. GitHub renders both formats."""
    if fmt not in FORMATS:
        raise ValueError(f"image format '{fmt}': expected one of {', '.join(FORMATS)}")
    img = Image.fromarray(array)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "webp":
        img.save(buf, format="WEBP", **({"lossless": True} if lossless else {"quality": 90}),
                 method=4)
    else:
        img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _records(results: dict, name: str) -> list[dict]:
    variant = (results.get("variants") or {}).get(name) if isinstance(results, dict) else None
    images = variant.get("images") if isinstance(variant, dict) else None
    return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


def select(results: dict, results_dir: Path, verdict: dict | None = None, *,
           baseline_dir: Path | None = None, fmt: str = DEFAULT_FORMAT, side: int = THUMB_SIDE,
           budget: int = DEFAULT_BUDGET, max_prompts: int = MAX_PROMPTS) -> Selection:
    """The comment's images, prompt by prompt in the results' order, until ``max_prompts`` or
    ``budget`` bytes; at most ``READ_FACTOR * max_prompts`` prompts are read at all, so that an
    artifact listing thousands of refused or oversized images costs a bounded amount of
    reading (and of log lines). The difference map is of what the gate judged (optimized vs baseline) when
    the verdict names a baseline image (read from ``baseline_dir``), else of optimized vs
    original; it is computed at full size, then downscaled like the rest."""
    out = Selection(fmt=fmt)
    ext = fmt
    originals = {(str(i.get("prompt")), i.get("seed")): i for i in _records(results, "original")}
    optimized = _records(results, "optimized")
    judged = {}
    quality = (verdict or {}).get("quality") if isinstance(verdict, dict) else None
    if isinstance(quality, dict) and isinstance(quality.get("images"), list):
        judged = {(str(i.get("prompt")), i.get("seed")): i for i in quality["images"]
                  if isinstance(i, dict)}
    current = optimized or list(originals.values())
    left_out = read = 0
    for rec in current:
        if len(out.rows) >= max_prompts or read >= READ_FACTOR * max_prompts:
            left_out += 1
            continue
        read += 1
        key = (str(rec.get("prompt", "")), rec.get("seed"))
        arrays: dict[str, np.ndarray] = {}
        sources = {"optimized" if optimized else "original": rec.get("path")}
        if optimized and key in originals:
            sources["original"] = originals[key].get("path")
        if baseline_dir is not None and key in judged and judged[key].get("baseline_path"):
            sources["baseline"] = judged[key]["baseline_path"]
        for kind in KINDS:
            if kind in sources:
                try:
                    arrays[kind] = read_untrusted_image(
                        baseline_dir if kind == "baseline" else results_dir, sources[kind])
                except ImageRefused as exc:
                    out.notes.append(str(exc))
        current_kind = "optimized" if optimized else "original"
        if current_kind not in arrays:
            continue
        reference = arrays.get("baseline") if "baseline" in arrays else (
            arrays.get("original") if current_kind == "optimized" else None)
        if reference is not None and reference.shape == arrays[current_kind].shape:
            arrays["difference"] = heat_map(reference, arrays[current_kind])
        row = SampleRow(key[0], key[1])
        files = []
        for kind in KINDS:
            if kind in arrays:
                name = f"{len(out.rows):02d}-{kind}.{ext}"
                files.append(Thumbnail(name, kind, encode_thumbnail(
                    arrays[kind], fmt, side, lossless=kind == "difference")))
                row.names[kind] = name
        size = sum(len(f.data) for f in files)
        if out.total_bytes + size > budget:
            left_out += 1
            continue
        out.rows.append(row)
        out.files.extend(files)
    if left_out:
        out.notes.append(f"{left_out} prompt(s) not shown: at most {max_prompts} prompts and "
                         f"{budget:,} bytes of images per comment, of the first "
                         f"{READ_FACTOR * max_prompts} prompts read")
    return out


def markdown_rows(selection: Selection, base_url: str) -> dict:
    """The report context's ``md_images``/``md_image_columns`` for images published under
    ``base_url`` (report.md.j2 escapes the prompt; the URL goes through markdown.safe_url)."""
    from .markdown import safe_url

    columns = selection.columns
    rows = [{"prompt": r.prompt, "seed": r.seed, "alt": r.prompt[:80],
             "cells": [safe_url(base_url, r.names[k]) if k in r.names else "" for k in columns]}
            for r in selection.rows]
    return {"md_images": rows, "md_image_columns": columns}


def prefixed(selection: Selection, prefix: str) -> Selection:
    """``selection`` with every file name prefixed (a matrix job's ``j01-``), so that several
    jobs' images share one run folder."""
    files = [Thumbnail(prefix + f.name, f.kind, f.data) for f in selection.files]
    rows = [SampleRow(r.prompt, r.seed, {k: prefix + n for k, n in r.names.items()})
            for r in selection.rows]
    return Selection(rows, files, list(selection.notes), selection.fmt)
