"""Every backend on the other families' tiny presets (#18), built from their recorded calls:
SDXL's UNet takes added conditions (a dict of tensors) that exports and converters must take as
graph inputs, or the candidate fails instead of running."""

import importlib.util

import pytest
import torch

import sdopt
from sdopt.backends.export import input_names
from sdopt.optimize.capture import collect_samples
from sdopt.optimize.metrics import resolve_metric

from ..conftest import PROMPTS, build_variant

# numeric_precision each variant must stay within on the tiny models.
CASES = [
    ("torch_eager", "bf16", 0.05),
    ("torch_int8", "dynamic-linear", 0.2),
    pytest.param("openvino", "fp32", 1e-4, marks=pytest.mark.skipif(
        importlib.util.find_spec("openvino") is None, reason="openvino is not installed")),
    pytest.param("openvino", "int8", 0.25, marks=pytest.mark.skipif(
        importlib.util.find_spec("nncf") is None, reason="nncf is not installed")),
    pytest.param("onnxruntime", "fp32", 1e-4, marks=pytest.mark.skipif(
        importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")),
]


@pytest.fixture(scope="module")
def sdxl():
    pipe = sdopt.build_preset("sdxl-tiny")
    samples = collect_samples(pipe, PROMPTS, height=64, width=64, steps=4, guidance_scale=7.5,
                              seed=0, n_verify=4)
    return pipe, samples


def _drops(module, samples) -> list[float]:
    metric = resolve_metric(None)
    with torch.inference_mode():
        return [float(metric.fn(s.reference, module(s.inputs.sample, s.inputs.timestep,
                                                    s.inputs.encoder_hidden_states,
                                                    **s.inputs.extra)))
                for s in samples.verification]


def test_export_inputs_name_the_added_conditions(sdxl):
    _, samples = sdxl
    assert input_names(samples.samples[0].inputs) == (
        "sample", "timestep", "encoder_hidden_states", "added_cond_kwargs.text_embeds",
        "added_cond_kwargs.time_ids")


@pytest.mark.parametrize("backend,variant,tolerance", CASES)
def test_sdxl_unet_runs_on_every_backend(sdxl, backend, variant, tolerance):
    pipe, samples = sdxl
    module = build_variant(pipe, backend, variant, samples)
    drops = _drops(module, samples)
    assert max(drops) <= tolerance, drops
    # The added conditions really reach the graph: other text embeddings, another output.
    s = samples.verification[0].inputs
    other = {"added_cond_kwargs": {**s.extra["added_cond_kwargs"],
                                   "text_embeds": s.extra["added_cond_kwargs"]["text_embeds"] + 1}}
    with torch.inference_mode():
        a = module(s.sample, s.timestep, s.encoder_hidden_states, **s.extra)
        b = module(s.sample, s.timestep, s.encoder_hidden_states, **other)
    assert not torch.allclose(a, b)
