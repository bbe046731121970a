"""The text encoder(s) in half precision: CUDA's text-encoder setting.

On an H200 the fp32 CLIP encoder took 9 ms of the 183 ms sd15 image at 512 px once the UNet and
the VAE decoder ran compiled in fp16 (benchmarks/results/gpu/gpu_peers_sd15_512.json): the
encoder is the last fp32 component there. Each CLIP or T5 encoder of the pipeline gets a private
copy (new module objects sharing the user's fp32 weights, so ``config``, ``dtype``, ``device``
and the final layer norm, which ``clip_skip`` applies to a returned hidden state, are the
original's) whose ``forward`` runs a half-precision copy of the encoder and casts every
floating output back to the encoder's dtype: the pipeline sees the fp32 encoder it had, with the
same output types, ``return_dict`` and ``output_hidden_states`` honoured (they are passed
through). fp16 comes first; bf16 (fp32's range) is tried when fp16 was not kept: T5 encoders are
known to overflow in fp16, which the image metric catches like any other setting.

On CPU the OpenVINO encoder (:mod:`text_encoder_openvino`) is the compiled one; eager torch in
half precision there is what the UNet backends measured slower than OpenVINO, so this setting is
CUDA's. Like every component setting it is judged on every prompt's image.
"""

from __future__ import annotations

import copy
import types

import torch

from ..backends.torch_module import DTYPES
from .base import Choice, Technique, cuda_only_reason
from .text_encoder_openvino import is_supported, replace_encoders, sharing_copy

NAME = "text_encoder_half"
PRECISIONS = ("fp16", "bf16")


def _cast(value, dtype):
    """``value`` (a tensor, a tuple of them, a transformers ModelOutput) with its floating
    tensors in ``dtype``."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):  # ModelOutput is an OrderedDict with typed fields
        return type(value)(**{k: _cast(v, dtype) for k, v in value.items()})
    return value


def _half_forward(self, *args, **kwargs):
    self.sdopt_half_calls += 1
    return _cast(self.sdopt_half(*args, **kwargs), self.dtype)


def half_text_encoder(encoder, precision: str):
    """A private copy of ``encoder`` whose forward runs in ``precision``; the user's encoder is
    untouched."""
    if not is_supported(encoder):
        raise NotImplementedError(f"{type(encoder).__name__} is not a CLIP or T5 text encoder")
    clone = sharing_copy(encoder)
    half = copy.deepcopy(encoder).eval().to(DTYPES[precision])
    half.requires_grad_(False)
    # A submodule (so that .to(device) moves it), added after the fp32 weights: transformers'
    # ``dtype`` is the first floating parameter's, fp32, as the pipeline expects.
    clone.add_module("sdopt_half", half)
    clone.sdopt_half_calls = 0  # tests count that the half copy, not the fp32 one, encoded
    clone.forward = types.MethodType(_half_forward, clone)
    clone.sdopt_technique = NAME
    return clone


def _device_reason(device) -> str | None:
    return cuda_only_reason("the half-precision text encoder", "the OpenVINO encoder (te_ov)",
                            device)


def unavailable_reason(module, device) -> str | None:
    return _device_reason(device)


def setting_reason(params: dict, device) -> str | None:
    return _device_reason(device) or \
        device.precision_unavailable_reason(params.get("precision", "fp16"))


def apply_pipeline(pipe, params: dict) -> None:
    replace_encoders(pipe, lambda encoder: half_text_encoder(encoder, params["precision"]))


TECHNIQUE = Technique(
    NAME, "pipeline", (Choice("precision", PRECISIONS),),
    tuple({"precision": p} for p in PRECISIONS), lambda p: f"te_{p['precision']}",
    "text encoder(s) (CLIP, T5) in half precision (CUDA)", apply_pipeline,
    unavailable_reason=unavailable_reason, constrained=True, setting_reason=setting_reason,
    component="text_encoder")
