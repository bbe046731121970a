"""The compiled half-precision VAE decoder (CUDA's VAE setting): here on CPU, in bf16, its graph
runs through torch.compile and decodes like the fp32 VAE; on a CPU the search lists it skipped
with the reason. On a GPU tests/test_cuda.py runs it in fp16 through the search."""

import copy

import numpy as np
import pytest
import torch

import sdopt
from sdopt.device import detect
from sdopt.optimize.metrics import psnr_db
from sdopt.techniques import TECHNIQUES, apply_pipeline_techniques, unavailable_reason
from sdopt.techniques.vae_torch_compile import CompiledDecoder, compiled_decoder_vae


def _image(pipe, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return np.asarray(pipe("a photo of a cat", num_inference_steps=4, generator=gen).images[0])


@pytest.fixture(scope="module")
def original():
    return sdopt.build_preset("tiny")


def test_on_a_cpu_it_is_skipped_with_the_reason():
    cpu = detect("cpu")
    for setting in TECHNIQUES["vae_compiled"].settings:
        reason = unavailable_reason({"name": "vae_compiled", **setting}, None, cpu)
        assert "CUDA" in reason and "vae_ov" in reason, reason
        assert TECHNIQUES["vae_compiled"].setting_reason(setting, cpu) == reason
    assert TECHNIQUES["vae_compiled"].constrained and TECHNIQUES["vae_compiled"].component == "vae"


def test_the_compiled_decoder_decodes_like_the_fp32_vae_and_leaves_the_users_untouched(original):
    reference = _image(original)
    weights = {k: v.clone() for k, v in original.vae.state_dict().items()}
    pipe = copy.copy(original)
    apply_pipeline_techniques(pipe, [{"name": "vae_compiled", "precision": "bf16"}])
    vae = pipe.vae
    assert vae is not original.vae and isinstance(vae.decoder, CompiledDecoder)
    assert isinstance(vae.post_quant_conv, torch.nn.Identity)  # folded into the compiled graph
    assert vae.decoder.module.decoder.conv_in.weight.dtype == torch.bfloat16
    assert vae.encoder is original.vae.encoder  # not copied: text-to-image never encodes
    assert vae.dtype == torch.float32  # the pipeline still sees an fp32 VAE
    image = _image(pipe)
    assert vae.decoder.calls == 1
    assert psnr_db(reference, image) > 35
    # the user's VAE: the same weights, in fp32, its own decoder and post_quant_conv
    assert original.vae.decoder.conv_in.weight.dtype == torch.float32
    assert not isinstance(original.vae.decoder, CompiledDecoder)
    for key, value in original.vae.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_a_vae_without_a_decoder_is_refused_with_the_reason():
    with pytest.raises(NotImplementedError, match="AutoencoderKL-like"):
        compiled_decoder_vae(torch.nn.Linear(2, 2), "bf16")
