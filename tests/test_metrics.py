import math

import pytest
import torch

from sdopt.errors import SdoptError
from sdopt.metrics import numeric_precision, resolve_metric, validate_threshold


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
