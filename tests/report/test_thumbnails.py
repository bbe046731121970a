"""The comment's sample images (sdopt/report/thumbnails.py) on the recorded report fixtures,
and the hostile files a fork's artifact could hold in their place."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdopt.report import thumbnails
from sdopt.report.thumbnails import ImageRefused, read_untrusted_image, select

DATA = Path(__file__).resolve().parents[1] / "data" / "report"


def _load(name):
    return json.loads((DATA / name).read_text())


@pytest.fixture
def run(tmp_path):
    shutil.copytree(DATA / "current", tmp_path / "current")
    return tmp_path / "current"


def test_select_has_every_kind_per_prompt_and_decodes(run):
    sel = select(_load("current/results.json"), run, _load("verdict-regression.json"),
                 baseline_dir=DATA / "baseline")
    assert [r.prompt for r in sel.rows] == ["a photo of a cat", "a painting of a city at night"]
    assert sel.columns == ["original", "optimized", "baseline", "difference"]
    assert not sel.notes
    for f in sel.files:
        assert f.name.endswith(".webp") and f.name in sel.rows[int(f.name[:2])].names.values()
        with Image.open(io.BytesIO(f.data)) as img:
            assert img.format == "WEBP" and max(img.size) <= thumbnails.THUMB_SIDE


def test_without_baseline_the_difference_is_to_the_original(run):
    sel = select(_load("current/results.json"), run, _load("verdict-pass.json"), fmt="png")
    assert sel.columns == ["original", "optimized", "difference"]
    assert all(f.data.startswith(b"\x89PNG") for f in sel.files)


def test_budget_and_prompt_cap_leave_whole_rows_out(run):
    results = _load("current/results.json")
    one_row = select(results, run, max_prompts=1)
    assert len(one_row.rows) == 1 and "1 prompt(s) not shown" in one_row.notes[0]
    tight = select(results, run, budget=one_row.total_bytes)
    assert len(tight.rows) == 1 and tight.total_bytes <= one_row.total_bytes


def test_thumbnails_are_downscaled_never_upscaled():
    big = np.zeros((600, 300, 3), np.uint8)
    with Image.open(io.BytesIO(thumbnails.encode_thumbnail(big, "png", 256))) as img:
        assert img.size == (128, 256)
    small = np.zeros((64, 64, 3), np.uint8)
    with Image.open(io.BytesIO(thumbnails.encode_thumbnail(small))) as img:
        assert img.size == (64, 64)


@pytest.mark.parametrize("make, relative, why", [
    (lambda d: (d / "x.png").write_text("<svg onload=alert(1)>"), "x.png", "not a readable"),
    (lambda d: None, "../current/images/original/0.png", "leaves the results directory"),
    (lambda d: None, "/etc/passwd", "leaves the results directory"),
    (lambda d: os.symlink(d / "images" / "original" / "0.png", d / "l.png"), "l.png",
     "symbolic link"),
    (lambda d: os.symlink(d / "images", d / "dir"), "dir/original/0.png", "symbolic link"),
    (lambda d: (d / "sub").mkdir(), "sub", "not a regular file"),
    (lambda d: None, "missing.png", "file not found"),
])
def test_hostile_files_are_refused_with_one_line(run, make, relative, why):
    make(run)
    with pytest.raises(ImageRefused, match=why) as info:
        read_untrusted_image(run, relative)
    assert "\n" not in str(info.value)


def test_oversized_images_are_refused_before_decoding(run, monkeypatch):
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_BYTES", 1000)
    with pytest.raises(ImageRefused, match="over the 1,000-byte limit"):
        read_untrusted_image(run, "images/original/0.png")
    monkeypatch.undo()
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_PIXELS", 100)
    with pytest.raises(ImageRefused, match="pixels is over"):
        read_untrusted_image(run, "images/original/0.png")


def test_a_refused_image_is_a_note_not_a_published_file(run):
    (run / "images" / "optimized" / "1.png").write_bytes(b"GIF89a not really")
    sel = select(_load("current/results.json"), run)
    assert len(sel.rows) == 1 and any("images/optimized/1.png" in n for n in sel.notes)
    assert all(f.name.startswith("00-") for f in sel.files)


def test_markdown_rows_link_each_thumbnail(run):
    sel = select(_load("current/results.json"), run)
    md = thumbnails.markdown_rows(sel, "https://example.invalid/a b/")
    assert md["md_image_columns"] == sel.columns
    assert md["md_images"][0]["cells"][0] == "https://example.invalid/a%20b/00-original.webp"


def test_the_comment_embeds_the_links_and_stays_under_the_limit(run):
    from sdopt.report import build_context, render_markdown
    from sdopt.report.markdown import MAX_CHARS

    results, verdict = _load("current/results.json"), _load("verdict-regression.json")
    sel = select(results, run, verdict, baseline_dir=DATA / "baseline")
    context = build_context(results, run, verdict=verdict, html=False)
    context.update(thumbnails.markdown_rows(sel, "https://github.com/octo/w/raw/sdopt-assets/r1"))
    body = render_markdown(context)
    assert len(body) < MAX_CHARS and "data:" not in body
    for f in sel.files:
        assert f"(https://github.com/octo/w/raw/sdopt-assets/r1/{f.name})" in body


def test_an_artifact_of_thousands_of_refused_images_is_read_only_so_far(run, monkeypatch):
    """A fork's artifact may list any number of images that are refused (or do not fit the
    budget): at most READ_FACTOR * max_prompts prompts are read, so the reading and the log
    lines it makes are bounded, and the rest is one note."""
    results = _load("current/results.json")
    for label in ("original", "optimized"):
        results["variants"][label]["images"] = [
            {"prompt": f"p{i}", "seed": 0, "path": f"images/{label}/missing-{i}.png"}
            for i in range(1000)]
    opened = []
    real = thumbnails.read_untrusted_image
    monkeypatch.setattr(thumbnails, "read_untrusted_image",
                        lambda d, rel: opened.append(rel) or real(d, rel))
    sel = select(results, run, max_prompts=3)
    assert not sel.rows and len(opened) == 2 * thumbnails.READ_FACTOR * 3
    assert len(sel.notes) == thumbnails.READ_FACTOR * 3 * 2 + 1
    assert sel.notes[-1].startswith(f"{1000 - thumbnails.READ_FACTOR * 3} prompt(s) not shown")
