import math

import pytest
import torch

from sdopt.errors import SdoptError
from sdopt.optimize.metrics import numeric_precision, resolve_metric, validate_threshold


def test_numeric_precision_is_zero_for_identical_and_grows_with_noise():
    torch.manual_seed(0)
    ref = torch.randn(2, 4, 8, 8)
    assert numeric_precision(ref, ref.clone()) == 0.0
    small = numeric_precision(ref, ref + 0.01 * torch.randn_like(ref))
    large = numeric_precision(ref, ref + 0.1 * torch.randn_like(ref))
    assert 0 < small < large
    # relative: scaling both does not change it
    assert math.isclose(numeric_precision(3 * ref, 3 * (ref + 0.1)), numeric_precision(ref, ref + 0.1),
                        rel_tol=1e-6)


def test_numeric_precision_of_nan_is_infinite():
    ref = torch.ones(4)
    assert numeric_precision(ref, torch.tensor([1.0, float("nan"), 1.0, 1.0])) == float("inf")


def test_numeric_precision_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        numeric_precision(torch.ones(4), torch.ones(5))


@pytest.mark.parametrize("value", [-0.1, 1.5, "abc", float("nan")])
def test_threshold_out_of_range(value):
    with pytest.raises(SdoptError, match="metric_drop_ths"):
        validate_threshold(value)


def test_threshold_in_range():
    assert validate_threshold(None) is None
    assert validate_threshold("0.05") == 0.05
    assert validate_threshold(0) == 0.0


def test_resolve_metric():
    assert resolve_metric(None).name == "numeric_precision"

    def max_abs(a, b):
        return float((a - b).abs().max())

    assert resolve_metric(max_abs).fn is max_abs
    with pytest.raises(SdoptError, match="unknown metric 'psnr2'"):
        resolve_metric("psnr2")


# --- image metrics ---------------------------------------------------------------------------

import numpy as np  # noqa: E402

from sdopt.optimize.metrics import (METRICS, clip_cosine_drop, clip_score_drop, configure_clip,  # noqa: E402
                           image_metric, psnr_db, psnr_drop, psnr_drop_to_db, score_images,
                           ssim_drop)


def _image(seed=0, size=64):
    """A smooth image with structure (gradients and a disc), like a generated one."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float)
    img = np.stack([x, y, disc], axis=-1) * 200 + rng.normal(0, 3, (size, size, 3)) + 20
    return np.clip(img, 0, 255).astype(np.uint8)


def _ladder(img, levels=(2, 6, 15, 40)):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, img.shape)
    return [np.clip(img + s * noise, 0, 255).astype(np.uint8) for s in levels]


@pytest.mark.parametrize("fn", [psnr_drop, ssim_drop])
def test_image_metric_is_zero_for_identical_and_monotone_in_noise(fn):
    img = _image()
    assert fn(img, img.copy()) == 0.0
    drops = [fn(img, noisy) for noisy in _ladder(img)]
    assert all(0 < a < b for a, b in zip(drops, drops[1:])), drops


def test_psnr_drop_is_rmse_fraction_and_maps_to_db():
    img = _image()
    noisy = _ladder(img)[1]
    rmse = np.sqrt(np.mean((img.astype(float) - noisy) ** 2)) / 255
    assert math.isclose(psnr_drop(img, noisy), rmse, rel_tol=1e-9)
    assert math.isclose(psnr_drop_to_db(psnr_drop(img, noisy)), psnr_db(img, noisy), rel_tol=1e-9)
    assert psnr_db(img, img) == math.inf and psnr_drop_to_db(0.0) == math.inf
    # Apple's 35 dB check is the psnr default threshold
    assert math.isclose(psnr_drop_to_db(METRICS["psnr"].default_threshold), 35, abs_tol=0.01)


def test_image_metrics_accept_float_images_and_refuse_other_sizes():
    img = _image()
    assert psnr_drop(img, img.astype(np.float32) / 255) == 0.0
    with pytest.raises(ValueError, match="same size"):
        ssim_drop(img, img[:32])
    with pytest.raises(ValueError, match="H x W x C"):
        psnr_drop(img[..., 0], img[..., 0])


def test_score_images_reports_mean_max_and_db():
    img = _image()
    noisy = _ladder(img)
    out = score_images([img, img], [img, noisy[2]], ["a", "b"], [METRICS["psnr"], METRICS["ssim"]])
    assert out["psnr"]["mean"] == pytest.approx(psnr_drop(img, noisy[2]) / 2)
    assert out["psnr"]["max"] == pytest.approx(psnr_drop(img, noisy[2]))
    assert out["psnr"]["db"] == pytest.approx(psnr_drop_to_db(out["psnr"]["mean"]))
    assert 0 < out["ssim"]["mean"] < out["ssim"]["max"]
    same = score_images([img], [img], ["a"], [METRICS["psnr"]])
    assert same["psnr"] == {"mean": 0.0, "max": 0.0, "db": None}, "JSON has no Infinity"


def test_user_image_metric_and_names():
    def mean_abs(a, b, prompt=None):
        return float(np.abs(a.astype(float) - b).mean())

    metric = resolve_metric(image_metric(mean_abs))
    assert metric.kind == "image" and metric.name == "mean_abs"
    assert resolve_metric("ssim").kind == "image"
    assert resolve_metric(mean_abs).kind == "unet", "plain callables stay UNet metrics"


def test_clip_metrics_without_a_local_model_are_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("SDOPT_CLIP_MODEL", raising=False)
    configure_clip(None)
    with pytest.raises(SdoptError, match="no local CLIP model configured .*SDOPT_CLIP_MODEL"):
        resolve_metric("clip_cosine")
    monkeypatch.setenv("SDOPT_CLIP_MODEL", "/nonexistent/clip")
    with pytest.raises(SdoptError, match="does not exist"):
        resolve_metric("clip_score")


def test_clip_metrics_with_a_local_model(local_clip):
    img = _image()
    assert resolve_metric("clip_cosine").name == "clip_cosine"
    assert clip_cosine_drop(img, img.copy()) == 0.0
    assert clip_score_drop(img, img.copy(), "a photo of a cat") == 0.0
    far = clip_cosine_drop(img, _ladder(img, (120,))[0])
    assert far > 0
    assert clip_score_drop(img, _ladder(img, (120,))[0], "a photo of a cat") >= 0
    with pytest.raises(ValueError, match="prompt"):
        clip_score_drop(img, img)
