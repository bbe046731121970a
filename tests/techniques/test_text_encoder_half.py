"""The half-precision text encoder (CUDA's text-encoder setting): here on CPU, in bf16, the copy
encodes like the fp32 encoder with the same output types and leaves the user's untouched; on a
CPU the search lists it skipped with the reason. tests/test_cuda.py runs it in fp16."""

import copy

import numpy as np
import pytest
import torch

import sdopt
from sdopt.device import detect
from sdopt.optimize.metrics import psnr_db
from sdopt.techniques import TECHNIQUES, apply_pipeline_techniques, unavailable_reason
from sdopt.techniques.text_encoder_half import half_text_encoder


@pytest.fixture(scope="module")
def original():
    return sdopt.build_preset("tiny")


def _image(pipe):
    gen = torch.Generator().manual_seed(0)
    return np.asarray(pipe("a photo of a cat", num_inference_steps=4, generator=gen).images[0])


def test_on_a_cpu_it_is_skipped_with_the_reason():
    cpu = detect("cpu")
    technique = TECHNIQUES["text_encoder_half"]
    for setting in technique.settings:
        reason = unavailable_reason({"name": "text_encoder_half", **setting}, None, cpu)
        assert "CUDA" in reason and "te_ov" in reason, reason
    assert technique.constrained and technique.component == "text_encoder"


def test_the_half_encoder_returns_the_fp32_encoders_outputs_in_fp32(original):
    encoder = original.text_encoder
    ids = original.tokenizer(["a photo of a cat"], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
    half = half_text_encoder(encoder, "bf16")
    assert half.dtype == torch.float32 and half.config.to_dict() == encoder.config.to_dict()
    assert half.sdopt_half.dtype == torch.bfloat16
    with torch.no_grad():
        want = encoder(ids, output_hidden_states=True)
        got = half(ids, output_hidden_states=True)
        plain = half(ids, return_dict=False)
    assert half.sdopt_half_calls == 2
    assert type(got) is type(want) and list(got.keys()) == list(want.keys())
    assert len(got.hidden_states) == len(want.hidden_states)
    for a, b in zip(got.hidden_states, want.hidden_states):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)
    assert isinstance(plain, tuple) and plain[0].dtype == torch.float32
    # the copy shares the user's fp32 weights; the half copy is its own
    assert next(half.parameters()) is next(encoder.parameters())
    assert all(p.dtype == torch.float32 for p in encoder.parameters())


def test_a_pipeline_with_it_makes_the_image_of_the_fp32_one(original):
    reference = _image(original)
    pipe = copy.copy(original)
    apply_pipeline_techniques(pipe, [{"name": "text_encoder_half", "precision": "bf16"}])
    assert pipe.text_encoder is not original.text_encoder
    assert psnr_db(reference, _image(pipe)) > 30
    assert pipe.text_encoder.sdopt_half_calls == 2  # the prompt and the empty negative prompt
    assert not hasattr(original.text_encoder, "sdopt_half")


def test_something_that_is_no_text_encoder_is_refused():
    with pytest.raises(NotImplementedError, match="not a CLIP or T5"):
        half_text_encoder(torch.nn.Linear(2, 2), "bf16")
