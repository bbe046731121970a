"""Every backend on the other UNet families' tiny presets (#18): SD 2.x (v-prediction, linear
projection, per-block head dims), SD 1.5 inpainting (a 9-channel UNet input: latents, mask and
masked-image latents) and image-to-image (from the pipeline's default start image). Built
from each family's recorded UNet calls, as the search builds them, and checked against the
recorded references with the variant's tolerance. SDXL's and the DiTs' are in
test_families_backends.py and test_families_dit_backends.py."""

import pytest
import torch

from ..conftest import build_variant
from .families import NNCF, OPENVINO, ORT, call, drops, recorded

FAMILIES = ["sd2-tiny", "inpaint-tiny", "img2img-tiny"]
# (backend, variant, the worst numeric_precision drop allowed on the tiny models, marks).
# Measured worst drops (2026-12-01, SD 2.x / inpainting / image-to-image): torch dynamic int8
# 0.021 / 0.010 / 0.008, ONNX Runtime fp32 0 (identical), dynamic int8 0.012 / 0.006 / 0.004,
# static int8 0.061 / 0.143 (inpainting's first, noisiest step) / 0.086; OpenVINO int8 (NNCF, the
# rest with the bf16 hint) 0.046 / 0.093 / 0.053, int8-inner (conv_in, conv_out in float) 0.040 /
# 0.049 / 0.040. OpenVINO fp32 and bf16 run in these families' searches (tests/optimize).
BACKENDS = [
    ("torch_int8", "dynamic-linear", 0.1, ()),
    # min/max int8 (one pass), worst 0.048 / 0.097 / 0.059; inner 0.043 / 0.065 / 0.053.
    ("openvino", "int8-minmax", 0.15, (OPENVINO,)),
    ("openvino", "int8-inner-minmax", 0.15, (OPENVINO,)),
    ("openvino", "int8", 0.15, (OPENVINO, NNCF)),
    ("openvino", "int8-inner", 0.15, (OPENVINO, NNCF)),
    ("onnxruntime", "fp32", 1e-4, (ORT,)),
    ("onnxruntime", "int8-dynamic", 0.1, (ORT,)),
    ("onnxruntime", "int8-static", 0.2, (ORT,)),
    # torch.compile takes 30-70 s per build here (freezing, 2 busy cores).
    ("torch_compile", "fp32", 1e-4, (pytest.mark.slow,)),
    ("torch_compile", "bf16", 0.1, (pytest.mark.slow,)),
]


def _cases():
    for family in FAMILIES:
        for backend, variant, tolerance, marks in BACKENDS:
            yield pytest.param(family, backend, variant, tolerance, marks=marks,
                               id=f"{family}-{backend}-{variant}")


def test_the_recorded_calls_are_each_familys_own():
    """Each preset is its family's pipeline; the inpainting UNet is called with 9 channels (4
    noisy latents, the mask, 4 masked-image latents) and gives 4; SD 2.x predicts v."""
    kinds = {family: type(recorded(family)[0]).__name__ for family in FAMILIES}
    assert kinds == {"sd2-tiny": "StableDiffusionPipeline",
                     "inpaint-tiny": "StableDiffusionInpaintPipeline",
                     "img2img-tiny": "StableDiffusionImg2ImgPipeline"}
    _, inpaint = recorded("inpaint-tiny")
    assert inpaint.samples[0].inputs.sample.shape[1] == 9
    assert inpaint.samples[0].reference.shape[1] == 4
    sd2_pipe, _ = recorded("sd2-tiny")
    assert sd2_pipe.scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("family,backend,variant,tolerance", list(_cases()))
def test_unet_family_runs_on_every_backend(family, backend, variant, tolerance):
    pipe, samples = recorded(family)
    module = build_variant(pipe, backend, variant, samples)
    worst = drops(module, samples)
    assert max(worst) <= tolerance, worst
    inputs = samples.verification[0].inputs
    out = call(module, inputs)
    assert out.shape == samples.verification[0].reference.shape
    # The conditions really reach the graph: other text states (and, for inpainting, another
    # mask and masked image), another output.
    with torch.inference_mode():
        other = module(inputs.sample, inputs.timestep, inputs.encoder_hidden_states + 1,
                       **inputs.extra)
    assert not torch.allclose(out, other)
    if family == "inpaint-tiny":
        masked = inputs.sample.clone()
        masked[:, 4:] = 0
        with torch.inference_mode():
            other = module(masked, inputs.timestep, inputs.encoder_hidden_states, **inputs.extra)
        assert not torch.allclose(out, other)
