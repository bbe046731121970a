"""Every backend on the other families' tiny presets (#18), built from their recorded calls:
SDXL's UNet takes added conditions (a dict of tensors) that exports and converters must take as
graph inputs, or the candidate fails instead of running."""

import pytest
import torch

from sdopt.backends.export import input_names

from ..conftest import build_variant
from .families import NNCF, OPENVINO, ORT, drops, recorded

# numeric_precision each variant must stay within on the tiny models.
CASES = [
    ("torch_eager", "bf16", 0.05),
    ("torch_int8", "dynamic-linear", 0.2),
    pytest.param("openvino", "fp32", 1e-4, marks=OPENVINO),
    pytest.param("openvino", "int8", 0.25, marks=(OPENVINO, NNCF)),
    pytest.param("onnxruntime", "fp32", 1e-4, marks=ORT),
    # torch.compile takes 30-200 s per build here (freezing, 2 busy cores).
    pytest.param("torch_compile", "fp32", 1e-4, marks=pytest.mark.slow),
    pytest.param("torch_compile", "bf16", 0.1, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def sdxl():
    return recorded("sdxl-tiny")


def test_export_inputs_name_the_added_conditions(sdxl):
    _, samples = sdxl
    assert input_names(samples.samples[0].inputs) == (
        "sample", "timestep", "encoder_hidden_states", "added_cond_kwargs.text_embeds",
        "added_cond_kwargs.time_ids")


@pytest.mark.parametrize("backend,variant,tolerance", CASES)
def test_sdxl_unet_runs_on_every_backend(sdxl, backend, variant, tolerance):
    pipe, samples = sdxl
    module = build_variant(pipe, backend, variant, samples)
    worst = drops(module, samples)
    assert max(worst) <= tolerance, worst
    # The added conditions really reach the graph: other text embeddings, another output.
    s = samples.verification[0].inputs
    other = {"added_cond_kwargs": {**s.extra["added_cond_kwargs"],
                                   "text_embeds": s.extra["added_cond_kwargs"]["text_embeds"] + 1}}
    with torch.inference_mode():
        a = module(s.sample, s.timestep, s.encoder_hidden_states, **s.extra)
        b = module(s.sample, s.timestep, s.encoder_hidden_states, **other)
    assert not torch.allclose(a, b)
