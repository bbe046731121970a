"""One image pair, one PSNR and one SSIM: the search (end-to-end scores), the gate (compare) and
the report (image rows) all call sdopt.optimize.metrics, so a number a reviewer reads in the
report is the number that decided, and identical images mean the same everywhere."""

import math

import numpy as np
import pytest
from PIL import Image

from sdopt.gate.compare import image_quality
from sdopt.optimize.metrics import METRICS, psnr_drop_to_db, score_images
from sdopt.report.images import compare


def _pair(side: int, seed: int = 0, noise: float = 6.0):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    candidate = np.clip(reference + rng.normal(0, noise, reference.shape), 0, 255).astype(np.uint8)
    return reference, candidate


def _three_ways(tmp_path, reference, candidate):
    scores = score_images([reference], [candidate], ["a prompt"],
                          [METRICS["psnr"], METRICS["ssim"]])
    search = (psnr_drop_to_db(scores["psnr"]["mean"]), 1.0 - scores["ssim"]["mean"])
    Image.fromarray(reference).save(tmp_path / "ref.png")
    Image.fromarray(candidate).save(tmp_path / "cand.png")
    gate = image_quality(tmp_path / "ref.png", tmp_path / "cand.png")
    shown = compare(reference, candidate)
    return search, gate, (shown.psnr_db, shown.ssim)


@pytest.mark.parametrize("side", [64, 5])  # 5 px: under SSIM's default 7 px window
def test_search_gate_and_report_agree_on_one_pair(tmp_path, side):
    search, gate, report = _three_ways(tmp_path, *_pair(side))
    assert gate == report, "the gate and the report disagree"
    # The search keeps PSNR as a drop (RMSE / 255); converted back it is the same number.
    assert search[0] == pytest.approx(gate[0], rel=1e-12)
    assert search[1] == pytest.approx(gate[1], rel=1e-12)
    assert 20 < gate[0] < 60 and 0 < gate[1] < 1


def test_identical_images_are_identical_everywhere(tmp_path):
    image, _ = _pair(32)
    search, gate, report = _three_ways(tmp_path, image, image.copy())
    assert search == gate == report == (math.inf, 1.0)
