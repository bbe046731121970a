"""The gate's decisions on whole results documents: quality, machines, sizes, paths. The latency
statistics are in test_latency (simulated runs with drift); real timings in tests/cli."""

import json

import numpy as np
import pytest
from PIL import Image

import math

from sdopt.gate.compare import (Inputs, compare_results, image_quality, not_comparable_line,
                                summary_text)
from sdopt.gate.results import NOT_COMPARABLE, PASS, REGRESSION, exit_code
from sdopt.gate.config import GateConfig
from sdopt.errors import SdoptError

def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _results(root, samples, image, device_name="cpu-A", height=64, prompt="a cat",
             config=None):
    _png(root / "images" / "optimized" / "0.png", image)
    doc = {"schema_version": 1, "kind": "sdopt-bench-results", "created_unix": 0,
           "sdopt_version": "0", "config": {"model": "tiny", "height": height, "width": 64,
                                            "steps": 4, "guidance_scale": 7.5, "batch": 1,
                                            **(config or {})},
           "environment": {"device": {"kind": "cpu", "name": device_name, "cores": 2},
                           "libraries": {"torch": "2.13.0"}},
           "variants": {"optimized": {"latency_s": {"samples": samples}, "images": [
               {"prompt": prompt, "seed": 0, "path": "images/optimized/0.png"}]}}}
    (root / "results.json").write_text(json.dumps(doc))
    return doc


@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 4, (64, 64, 3)), axis=0)
    return np.clip(128 + smooth, 0, 255)


def _compare(tmp_path, base_kw, cur_kw, gate=None, allow_other_machine=False):
    base = _results(tmp_path / "base", **base_kw)
    cur = _results(tmp_path / "cur", **cur_kw)
    return compare_results(Inputs(base, tmp_path / "base", cur, tmp_path / "cur"), gate,
                           allow_other_machine=allow_other_machine)


def test_identical_rerun_passes_and_a_noisy_image_is_a_quality_regression(tmp_path, picture):
    same = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0]
    verdict = _compare(tmp_path, dict(samples=same, image=picture),
                       dict(samples=same, image=picture))
    assert verdict["verdict"] == PASS and exit_code(verdict) == 0
    # Identical images: infinite PSNR, recorded as null (JSON has no infinity).
    assert verdict["quality"]["images"][0]["psnr_db"] is None
    noisy = picture + np.random.default_rng(1).normal(0, 25, picture.shape)
    verdict = _compare(tmp_path, dict(samples=same, image=picture),
                       dict(samples=same, image=np.clip(noisy, 0, 255)))
    assert verdict["verdict"] == REGRESSION and exit_code(verdict) == 1
    image = verdict["quality"]["images"][0]
    assert image["regressed"] and image["psnr_db"] < 30
    assert not verdict["latency"]["regressed"]
    assert any(r.startswith("quality regression") for r in verdict["reasons"])
    assert "REGRESSED" in summary_text(verdict)


def test_clip_threshold_flags_what_psnr_and_ssim_let_through(tmp_path, picture, local_clip):
    """With PSNR/SSIM switched off, the CLIP cosine alone decides (random-weight CLIP: the
    threshold is set just below 1, what matters is identical vs changed)."""
    same = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0]
    gate = GateConfig(psnr_min_db=0, ssim_min=-1, clip_min=0.999999)
    verdict = _compare(tmp_path, dict(samples=same, image=picture),
                       dict(samples=same, image=picture), gate=gate)
    assert verdict["verdict"] == PASS and verdict["quality"]["metric"] == "psnr+ssim+clip"
    assert verdict["quality"]["images"][0]["clip_cosine"] == 1.0
    noisy = np.clip(picture + np.random.default_rng(1).normal(0, 60, picture.shape), 0, 255)
    verdict = _compare(tmp_path, dict(samples=same, image=picture),
                       dict(samples=same, image=noisy), gate=gate)
    assert verdict["verdict"] == REGRESSION
    assert verdict["quality"]["images"][0]["clip_cosine"] < 0.999999
    assert any("CLIP cosine" in r for r in verdict["reasons"])


def test_clip_threshold_without_a_local_model_is_one_clear_error(tmp_path, picture, monkeypatch):
    from sdopt.optimize.metrics import configure_clip

    monkeypatch.delenv("SDOPT_CLIP_MODEL", raising=False)
    configure_clip(None)
    same = [1.0, 1.0, 1.0]
    with pytest.raises(SdoptError, match=r"gate.clip_min = 0.95 needs a local CLIP model.*"
                                         r"gate.clip_model"):
        _compare(tmp_path, dict(samples=same, image=picture), dict(samples=same, image=picture),
                 gate=GateConfig(clip_min=0.95))


def test_image_quality_of_a_tiny_change_stays_above_the_thresholds(tmp_path, picture):
    _png(tmp_path / "a.png", picture)
    changed = picture.copy()
    changed[10, 10] += 1
    _png(tmp_path / "b.png", changed)
    psnr, ssim = image_quality(tmp_path / "a.png", tmp_path / "b.png")
    assert 60 < psnr < math.inf and ssim > 0.99


def test_another_machine_is_not_comparable_unless_warned_or_forced(tmp_path, picture):
    s = [1.0] * 6
    verdict = _compare(tmp_path, dict(samples=s, image=picture),
                       dict(samples=s, image=picture, device_name="cpu-B"))
    assert verdict["verdict"] == NOT_COMPARABLE and exit_code(verdict) == 3
    assert "another machine" in verdict["reasons"][0] and "cpu-B" in verdict["reasons"][0]
    assert verdict["baseline"]["environment_match"] is False
    warn = GateConfig(on_environment_mismatch="warn")
    verdict = _compare(tmp_path, dict(samples=s, image=picture),
                       dict(samples=s, image=picture, device_name="cpu-B"), gate=warn)
    assert verdict["verdict"] == PASS and any(r.startswith("warning") for r in verdict["reasons"])
    verdict = _compare(tmp_path, dict(samples=s, image=picture),
                       dict(samples=s, image=picture, device_name="cpu-B"), allow_other_machine=True)
    assert verdict["verdict"] == PASS


def test_a_different_image_size_is_not_comparable(tmp_path, picture):
    s = [1.0] * 6
    verdict = _compare(tmp_path, dict(samples=s, image=picture),
                       dict(samples=s, image=picture[:32], height=32))
    assert verdict["verdict"] == NOT_COMPARABLE


def test_image_paths_outside_the_results_directory_are_refused(tmp_path, picture):
    base = _results(tmp_path / "base", samples=[1.0] * 6, image=picture)
    cur = _results(tmp_path / "cur", samples=[1.0] * 6, image=picture)
    cur["variants"]["optimized"]["images"][0]["path"] = "../base/images/optimized/0.png"
    with pytest.raises(SdoptError, match="outside its directory"):
        compare_results(Inputs(base, tmp_path / "base", cur, tmp_path / "cur"))


CAT, DOG = "1" * 64, "2" * 64  # start images' sha256 as bench records them


def _hashes(start, mask=None):
    return {"prompts": ["a cat"], "start_image_sha256": [start], "mask_image_sha256": [mask]}


def test_the_same_start_image_is_comparable(tmp_path, picture):
    s = [1.0] * 6
    verdict = _compare(tmp_path, dict(samples=s, image=picture, config=_hashes(CAT, DOG)),
                       dict(samples=s, image=picture, config=_hashes(CAT, DOG)))
    assert verdict["verdict"] == PASS


def test_another_start_image_or_mask_is_not_comparable_instead_of_a_quality_regression(
        tmp_path, picture):
    """Another start image makes another picture: the gate says the pair cannot be compared
    (exit 3, naming the field and the prompt), as for another image size, not that the
    quality dropped."""
    s = [1.0] * 6
    other = np.clip(255 - picture, 0, 255)
    for base_cfg, cur_cfg, key in ((_hashes(CAT), _hashes(DOG), "start_image_sha256"),
                                   (_hashes(CAT, CAT), _hashes(CAT, DOG), "mask_image_sha256")):
        verdict = _compare(tmp_path, dict(samples=s, image=picture, config=base_cfg),
                           dict(samples=s, image=other, config=cur_cfg))
        assert verdict["verdict"] == NOT_COMPARABLE and exit_code(verdict) == 3
        first = verdict["reasons"][0]
        assert first.startswith(f"not comparable: config {key} differs for prompt 'a cat'")
        assert "save a new baseline" in first
        assert [r for r in verdict["reasons"] if key in r] == [first]
        # The other pictures are not judged: no quality regression is claimed.
        assert not verdict["quality"]["regressed"] and verdict["quality"]["images"] == []
        assert not any(r.startswith("quality regression") for r in verdict["reasons"])
        assert any(r.startswith("note: image quality not compared") for r in verdict["reasons"])
        line = not_comparable_line(verdict, "base", "cur")
        assert "\n" not in line and key in line and "111111111111" in line


def test_text_to_image_results_and_old_baselines_without_hashes(tmp_path, picture):
    """Text-to-image results record no hashes and compare as before; a baseline saved before
    the hashes were recorded cannot vouch for its start images: not comparable."""
    s = [1.0] * 6
    verdict = _compare(tmp_path, dict(samples=s, image=picture), dict(samples=s, image=picture))
    assert verdict["verdict"] == PASS
    assert not any("sha256" in r for r in verdict["reasons"])
    verdict = _compare(tmp_path, dict(samples=s, image=picture),
                       dict(samples=s, image=picture, config=_hashes(CAT)))
    assert verdict["verdict"] == NOT_COMPARABLE
    assert "start_image_sha256 differs: baseline none (" in verdict["reasons"][0]
    assert "not known to be the same" in verdict["reasons"][0]
    # No hashes and a list of default masks are the same masks.
    assert not any("mask_image_sha256" in r for r in verdict["reasons"])
