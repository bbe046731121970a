"""The VAE decoder in fp16 or bf16, channels_last, through torch.compile: CUDA's VAE setting.

On an H200 the sd15 image at 512 px spent 28 ms of its 203 ms in the fp32 VAE decoder once the
UNet ran compiled with CUDA graphs (benchmarks/results/gpu/gpu_peers_sd15_512.json), and the
eager bf16 decoder (:mod:`vae_bf16`) was slower than fp32 there (1.065x the image's time: the
casts and unfused GroupNorm/SiLU passes cost more than the tensor cores save). diffusers'
fast-diffusion recipe compiles ``vae.decode`` for that reason. This technique gives the pipeline
a private copy of the VAE whose ``decoder`` runs ``post_quant_conv`` then the decoder as one
compiled graph in half precision (inductor fuses the normalisations and activations around
cuDNN's tensor-core convolutions); latents are cast in and the image cast back, so the pipeline
sees the fp32 VAE it had. On CPU, the OpenVINO decoder (:mod:`vae_openvino`) is the compiled VAE.

fp16 comes first (the tensor cores' fastest type and what the UNet runs in); bf16 is tried when
fp16 was not kept: some VAEs (SDXL's) overflow in fp16, which the image metric catches (a NaN
image fails), and bf16 has fp32's range. Like every torch.compile graph, the decoder compiles
again after ``load_model`` (the spec is saved, never a compiled artifact).
"""

from __future__ import annotations

import copy

import torch

from .. import deps
from ..backends.torch_module import DTYPES
from .base import Choice, Technique, cuda_only_reason
from .vae_openvino import PostQuantDecoder, check_decodable

NAME = "vae_compiled"
PRECISIONS = ("fp16", "bf16")


class CompiledDecoder(torch.nn.Module):
    """Stands in for ``vae.decoder`` (``post_quant_conv`` included): latents in, image out, in
    the latents' dtype."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.dtype_ = dtype
        # Kept beside the module (not a submodule): state_dict and .to() see the plain weights.
        object.__setattr__(self, "_compiled", torch.compile(module, dynamic=False,
                                                            fullgraph=True))
        self.calls = 0  # tests count that the compiled graph, not the original, decoded

    def forward(self, sample, latent_embeds=None):
        if latent_embeds is not None:
            raise NotImplementedError("the compiled VAE decoder was built without "
                                      "latent_embeds (a spatially conditioned decoder)")
        self.calls += 1
        z = sample.to(self.dtype_).contiguous(memory_format=torch.channels_last)
        return self._compiled(z).to(sample.dtype).contiguous()


def compiled_decoder_vae(vae, precision: str):
    """A private copy of ``vae`` whose decode runs compiled at ``precision``; the user's VAE is
    untouched (its encoder is shared, unchanged; everything else is copied)."""
    check_decodable(vae)
    dtype = DTYPES[precision]
    pqc = getattr(vae, "post_quant_conv", None)
    # The encoder is not used by text-to-image and stays the user's (shared, not copied).
    shared = {id(vae.encoder): vae.encoder} if getattr(vae, "encoder", None) is not None else {}
    clone = copy.deepcopy(vae, memo=shared).eval()
    clone.requires_grad_(False)
    half = PostQuantDecoder(clone.post_quant_conv if pqc is not None else None, clone.decoder)
    half.to(dtype=dtype, memory_format=torch.channels_last)
    clone.decoder = CompiledDecoder(half, dtype)
    if pqc is not None:
        clone.post_quant_conv = torch.nn.Identity()  # inside the compiled graph
    clone.sdopt_technique = NAME
    return clone


def _device_reason(device) -> str | None:
    return cuda_only_reason("torch.compile of the VAE decoder", "the OpenVINO decoder (vae_ov)",
                            device)


def unavailable_reason(module, device) -> str | None:
    return _device_reason(device) or \
        deps.unavailable_reason("triton", "torch.compile of the VAE decoder on CUDA")


def setting_reason(params: dict, device) -> str | None:
    return _device_reason(device) or \
        device.precision_unavailable_reason(params.get("precision", "fp16"))


def apply_pipeline(pipe, params: dict) -> None:
    pipe.vae = compiled_decoder_vae(pipe.vae, params["precision"])


TECHNIQUE = Technique(
    NAME, "pipeline", (Choice("precision", PRECISIONS),),
    tuple({"precision": p} for p in PRECISIONS), lambda p: f"vae_compiled_{p['precision']}",
    "VAE decoder in half precision through torch.compile (CUDA)", apply_pipeline,
    unavailable_reason=unavailable_reason, constrained=True, setting_reason=setting_reason,
    component="vae")
