"""Activation ranges recorded in the capture: the statistics pass's ranges without running it."""

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends.activation_ranges import (RangeRecorder, attention_key, graph_key,
                                              input_key, mean_ranges)
from sdopt.models import denoiser_of
from sdopt.optimize.capture import collect_samples

from ..conftest import build_variant, verification_drops

pytest.importorskip("openvino", reason="the openvino package is not installed")

from sdopt.backends import openvino_minmax_int8 as minmax  # noqa: E402
from sdopt.backends.openvino import _calibration_items, convert_unet  # noqa: E402


def test_graph_names_map_to_the_recorded_keys():
    assert graph_key("Convolution", "__module.unet.down_blocks.0.resnets.0.conv1/"
                     "aten::_convolution/Convolution", 0) == \
        input_key("down_blocks.0.resnets.0.conv1")
    assert graph_key("MatMul", "__module.unet.mid_block.attentions.0.proj_in/aten::linear/MatMul",
                     0) == input_key("mid_block.attentions.0.proj_in")
    name = "__module.unet.a.attn1/aten::scaled_dot_product_attention/ScaledDotProductAttention"
    assert graph_key("ScaledDotProductAttention", name, 1) == attention_key("a.attn1", 1)
    # a MatMul of two activations (no module's input) and names without a module path
    assert graph_key("MatMul", "__module.unet.pos_embed/aten::outer/MatMul", 0) is None
    assert graph_key("Convolution", "Convolution_123", 0) is None
    assert graph_key("MatMul", "__module.unet.x/aten::linear/MatMul", 1) is None


def test_a_module_called_twice_in_one_call_is_ambiguous():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.layer(self.layer(x))

    model = Twice()
    recorder = RangeRecorder(model)
    try:
        with torch.inference_mode():
            model(torch.randn(2, 4))
        call = recorder.take()
    finally:
        recorder.close()
    assert call == {input_key("layer"): None}
    assert mean_ranges([[input_key("layer")]], [call]) is None
    assert mean_ranges([[input_key("layer")]], [{input_key("layer"): (-1.0, 3.0)},
                                                {input_key("layer"): (-3.0, 1.0)}]) == \
        [(-2.0, 2.0)]


@pytest.mark.parametrize("preset", ["tiny", "sd3-tiny"])
def test_recorded_ranges_are_the_statistics_pass_ranges(preset):
    """Every tensor the min/max plan quantizes (convolution and linear inputs, attention query
    and key) maps to a range the capture recorded, equal to what OpenVINO's statistics pass
    collects on the same calls."""
    pipe = sdopt.build_preset(preset)
    samples = collect_samples(pipe, ["a cat", "a dog"], height=64, width=64, steps=4,
                              guidance_scale=7.5, seed=0, n_verify=4)
    recorded = samples.calibration_ranges()
    assert len(recorded) == len(samples.calibration) > 0
    model = convert_unet(denoiser_of(pipe), samples.calibration[0].inputs)
    uses: dict = {}
    activations, _ = minmax.quantization_plan(model.clone(), consumers=uses)
    kinds = {kind for k in activations for kind, _, _ in uses[k]}
    assert {"MatMul", "ScaledDotProductAttention"} <= kinds
    found = mean_ranges([[graph_key(*use) for use in uses[k]] for k in activations], recorded)
    assert found is not None, "every quantized tensor maps to a recorded range"
    stats = model.clone()
    tensors, _ = minmax.quantization_plan(stats)
    reference = minmax.collect_ranges(stats, [t for t, _ in tensors.values()],
                                      _calibration_items(model, [c.inputs
                                                                 for c in samples.calibration]))
    np.testing.assert_allclose(np.array(found), reference, rtol=1e-4, atol=1e-5)


def test_min_max_int8_takes_the_capture_ranges(tiny_pipe, samples, tmp_path):
    """The build uses the recorded ranges (no statistics pass); without them it runs the pass,
    and the two models compute the same within int8 noise."""
    recorded = build_variant(tiny_pipe, "openvino", "int8-minmax", samples,
                             cache_dir=tmp_path / "recorded")
    passed = build_variant(tiny_pipe, "openvino", "int8-minmax", samples,
                           cache_dir=tmp_path / "pass", recorded_ranges=False)
    assert recorded.build_info["int8"]["ranges"] == "capture"
    assert passed.build_info["int8"]["ranges"].startswith("statistics pass")
    drops = verification_drops(recorded, samples)
    assert max(drops) <= 0.15
    assert np.allclose(drops, verification_drops(passed, samples), rtol=0.02, atol=1e-4)
