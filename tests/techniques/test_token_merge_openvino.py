"""Token merging on the OpenVINO pick (#20): the user's UNet with the merging processors is
converted per input shape and run with the pick's recipe (its hint; a min/max int8 pick's own
ranges, taken by the layer input each quantizer feeds); the merged graph gives what the eager
merged UNet gives, and stacks on the int8 pick with images close to the original's."""

import copy

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends import load_builtin_backends
from sdopt.backends.base import BACKENDS, UNetInputs
from sdopt.backends.openvino_minmax_int8 import ranges_by_input
from sdopt.backends.torch_eager import reference_module
from sdopt.device import detect
from sdopt.optimize.metrics import numeric_precision, psnr_db
from sdopt.techniques import stack_reason, step_cache, token_merge, unavailable_reason
from sdopt.techniques.token_merge_openvino import OpenVINOTokenMergeModule

from .test_step_cache_openvino import _build

pytest.importorskip("openvino")

SPEC = {"name": "token_merge", "ratio": 0.5}


@pytest.fixture(scope="module")
def tiny():
    return sdopt.build_preset("tiny")


def _inputs(unet, seed=0, side=32):
    gen = torch.Generator().manual_seed(seed)
    return UNetInputs(torch.randn(2, 4, side, side, generator=gen), torch.tensor(900.0),
                      torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen), {})


def _call(module, x):
    with torch.inference_mode():
        out = module(x.sample, x.timestep, x.encoder_hidden_states)
    return getattr(out, "sample", out)


@pytest.fixture(scope="module")
def ov_fp32(tiny, tmp_path_factory):
    return _build(tiny.unet, "fp32", _inputs(tiny.unet), tmp_path_factory.mktemp("ov"))


@pytest.fixture(scope="module")
def ov_int8(tiny, tmp_path_factory):
    return _build(tiny.unet, "int8-inner-minmax", _inputs(tiny.unet),
                  tmp_path_factory.mktemp("ov8"))


def test_the_merged_graph_gives_what_the_eager_merged_unet_gives(tiny, ov_fp32):
    assert unavailable_reason(SPEC, ov_fp32, detect("cpu")) is None
    merged = token_merge.apply(ov_fp32, {"ratio": 0.5}, tiny.unet)
    assert isinstance(merged, OpenVINOTokenMergeModule)
    eager = token_merge.apply(reference_module(tiny.unet), {"ratio": 0.5}, tiny.unet)
    x = _inputs(tiny.unet, seed=1)
    a, b, plain = _call(merged, x), _call(eager, x), _call(ov_fp32, x)
    assert numeric_precision(b, a) < 1e-4
    assert numeric_precision(plain, a) > 1e-3  # tokens were merged
    processors = [m.processor for m in merged._merged[0].modules()
                  if isinstance(getattr(m, "processor", None), token_merge.TokenMergeProcessor)]
    assert processors and processors[0].tokens_attended < processors[0].tokens_in
    # One graph per input shape, converted on the first call with it.
    _call(merged, _inputs(tiny.unet, seed=2))
    assert len(merged.graphs) == 1
    _call(merged, _inputs(tiny.unet, seed=2, side=16))
    assert len(merged.graphs) == 2
    # The user's UNet keeps its own processors.
    assert not any(isinstance(getattr(m, "processor", None), token_merge.TokenMergeProcessor)
                   for m in tiny.unet.modules())


def test_the_int8_pick_is_merged_with_its_own_ranges(tiny, ov_int8):
    merged = token_merge.apply(ov_int8, {"ratio": 0.5}, tiny.unet)
    x = _inputs(tiny.unet, seed=1)
    eager = token_merge.apply(reference_module(tiny.unet), {"ratio": 0.5}, tiny.unet)
    error = numeric_precision(_call(eager, x), _call(merged, x))
    base_error = numeric_precision(_call(reference_module(tiny.unet), x), _call(ov_int8, x))
    assert error < 3 * base_error + 1e-3, (error, base_error)
    (counts,) = merged.built.values()
    base_ranges = ranges_by_input(ov_int8.graph.model)
    (graph,) = merged.graphs.values()
    ranges = ranges_by_input(graph.model)
    # Every quantized layer input of the pick is quantized alike in the merged graph ...
    assert base_ranges and set(base_ranges) <= set(ranges)
    assert all(np.allclose(base_ranges[k], ranges[k]) for k in base_ranges)
    # ... and the matching's products (similarity, mean) stay float.
    assert counts["float_activations"] > 0 and counts["seconds"] > 0
    # The same module rebuilt (as load_model does) gives the same output.
    again = token_merge.apply(ov_int8, {"ratio": 0.5}, tiny.unet)
    assert torch.equal(_call(again, x), _call(merged, x))


def test_step_caching_does_not_stack_on_the_merged_graph(tiny, ov_fp32):
    specs = [SPEC, {"name": "step_cache", "interval": 2}]
    assert "does not stack on token_merge" in stack_reason(specs, ov_fp32)
    assert stack_reason(specs, reference_module(tiny.unet)) is None  # eager: they stack
    merged = token_merge.apply(ov_fp32, {"ratio": 0.5}, tiny.unet)
    with pytest.raises(ValueError, match="wrapped by another technique"):
        step_cache.apply(merged, {"interval": 2}, tiny.unet)


def test_nncf_calibrated_and_weight_compressed_picks_are_refused_with_reasons(ov_fp32):
    load_builtin_backends()
    nncf = next(v for v in BACKENDS["openvino"].variants(detect("cpu")) if v.name == "int8")
    module = copy.copy(ov_fp32)
    module.variant = nncf
    reason = unavailable_reason(SPEC, module, detect("cpu"))
    assert reason and "NNCF" in reason and "min/max int8" in reason
    module.variant = next(v for v in BACKENDS["openvino"].variants(detect("cpu"))
                          if v.name == "int8-weights")
    reason = unavailable_reason(SPEC, module, detect("cpu"))
    assert reason and "compresses the converted graph's weights" in reason


def test_token_merging_stacks_on_the_int8_pick_and_its_images_stay_close(tiny, ov_int8):
    from sdopt.optimize.optimized import assemble

    from .test_techniques import _images

    pipe = assemble(tiny, ov_int8, [SPEC], detect("cpu"), info={"techniques": [SPEC]})
    plain = assemble(tiny, ov_int8, [], detect("cpu"), info={"techniques": []})
    images, reference = _images(pipe), _images(plain)
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 20
    assert not all(np.array_equal(r, i) for r, i in zip(reference, images))


def test_a_saved_pick_with_token_merging_loads_only_with_the_weights_it_was_made_from(tmp_path):
    """load_model converts the given pipeline's UNet again for the merged graph: with the
    weights the model was made from it gives the same images; with others it refuses."""
    import json

    from sdopt.optimize.manifest import MANIFEST_NAME

    from .test_techniques import _images

    original = sdopt.build_preset("tiny")
    target = tmp_path / "saved"
    sdopt.save_model(sdopt.apply_variant(original, "openvino/fp32"), target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["techniques"] = [SPEC]
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    loaded = sdopt.load_model(target, pipe=sdopt.build_preset("tiny"))
    again = sdopt.load_model(target, pipe=sdopt.build_preset("tiny"))
    assert any(isinstance(m, OpenVINOTokenMergeModule) for m in loaded.unet.modules())
    assert all(np.array_equal(a, b) for a, b in zip(_images(loaded), _images(again)))
    other = sdopt.build_preset("tiny")
    with torch.no_grad():
        other.unet.conv_in.weight.add_(0.01)
    with pytest.raises(sdopt.SdoptError, match="weights differ.*token_merge"):
        sdopt.load_model(target, pipe=other)
