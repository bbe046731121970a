"""A whole constrained search on a DiT family's tiny preset (#18): SD3's transformer, whose
calls carry pooled projections besides the UNet's three inputs, goes through every backend the
search tries without a failed row."""

import torch

import sdopt
from sdopt.models import denoiser_of

from ..conftest import PROMPTS


def test_constrained_search_on_a_dit_runs_to_the_end():
    """Every candidate ran (ok, selected or rejected) or says why it was skipped; none failed on
    the transformer's inputs. Without the end-to-end phase (images, and the VAE and text-encoder
    techniques judged on them): the family round trips (test_families.py) make images of
    optimized DiTs."""
    pipe = sdopt.build_preset("sd3-tiny")
    optimized = sdopt.optimize_model(pipe, PROMPTS, metric_drop_ths=0.05,
                                     optimization_time="constrained", num_inference_steps=4,
                                     repeats=2, show=False, end_to_end=False)
    rows = optimized.sdopt_result.candidates
    assert not [(r.id, r.reason) for r in rows if r.status == "failed"]
    assert all(r.reason for r in rows if r.status == "skipped"), \
        [(r.id, r.status) for r in rows]
    assert {r.status for r in rows} <= {"ok", "selected", "rejected", "skipped"}
    tried = {r.backend for r in rows if r.status in ("ok", "selected", "rejected")}
    # ONNX Runtime is bounded by OpenVINO's measured speed in an ordered search (it may not
    # run here): test_onnxruntime_runs_a_dit runs it alone.
    assert {"torch_eager", "openvino"} <= tried, tried
    assert any(r.status == "selected" for r in rows)
    assert denoiser_of(optimized) is not pipe.transformer
    image = optimized(PROMPTS[0], num_inference_steps=4,
                      generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_onnxruntime_runs_a_dit():
    """ONNX Runtime alone (no OpenVINO figure to bound it by): its export and sessions take the
    transformer's inputs, pooled projections included."""
    pipe = sdopt.build_preset("sd3-tiny")
    optimized = sdopt.optimize_model(pipe, PROMPTS, metric_drop_ths=0.05,
                                     optimization_time="constrained", num_inference_steps=4,
                                     repeats=2, show=False, end_to_end=False,
                                     backends=["onnxruntime"])
    rows = [r for r in optimized.sdopt_result.candidates if r.backend == "onnxruntime"]
    assert not [(r.id, r.reason) for r in rows if r.status == "failed"]
    assert any(r.status in ("ok", "selected", "rejected") for r in rows), \
        [(r.id, r.status, r.reason) for r in rows]
