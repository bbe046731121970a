"""The VAE decoder compiled with OpenVINO (bf16, or fp32 on CPUs without bf16 units).

The VAE decode is a large share of a CPU image once the UNet is compiled (7.5 s of 64.8 s at
512 px on sd15 even with the torch bf16 decoder, issue #20); the UNet backends leave it to torch.
This technique converts what ``vae.decode`` computes (``post_quant_conv`` then ``decoder``) with
``openvino.convert_model`` and gives the pipeline a private copy of the VAE whose ``decoder`` runs
the compiled graph and whose ``post_quant_conv`` is folded into it. diffusers' own ``decode``
still runs around it (slicing, tiling, ``return_dict``, ``DecoderOutput``), and the copy keeps
the original's encoder, config, dtype and device, so the pipeline sees the VAE it had. Latent
sizes vary with the requested image size: the graph keeps dynamic spatial dimensions and is
compiled once per shape; the converted IR is kept in sdopt's cache, so another process (a loaded
model) reads it instead of converting (:mod:`sdopt.techniques.openvino_graph`).

Judged like the bf16 VAE: on the final images, under the search's threshold. int8 is not offered:
post-training int8 needs calibration latents and NNCF minutes, and weight-only int8 does not
speed up convolutions.
"""

from __future__ import annotations

import copy

import torch

from .base import Choice, Technique
from .openvino_graph import CompiledGraph, converted, setting_reason
from .openvino_graph import unavailable_reason as openvino_unavailable_reason

NAME = "vae_openvino"
PRECISIONS = ("bf16", "fp32")
# The latent size traced for conversion; every dimension but the channels stays dynamic.
EXAMPLE_SIZE = 8


class PostQuantDecoder(torch.nn.Module):
    """What ``AutoencoderKL._decode`` runs on a latent, as one module to convert."""

    def __init__(self, post_quant_conv, decoder):
        super().__init__()
        self.post_quant_conv = post_quant_conv
        self.decoder = decoder

    def forward(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


class OpenVINODecoder(torch.nn.Module):
    """Stands in for ``vae.decoder`` (``post_quant_conv`` included): latents in, image out, in
    the latents' dtype and device."""

    def __init__(self, graph: CompiledGraph):
        super().__init__()
        self.graph = graph
        self.calls = 0  # tests count that the compiled graph, not torch, decoded

    def forward(self, sample, latent_embeds=None):
        if latent_embeds is not None:
            raise NotImplementedError("the OpenVINO VAE decoder was converted without "
                                      "latent_embeds (a spatially conditioned decoder)")
        self.calls += 1
        (image,) = self.graph(sample.float())
        return image.to(device=sample.device, dtype=sample.dtype)


def check_decodable(vae) -> None:
    """Refuse a VAE whose decode is not ``post_quant_conv`` then ``decoder`` (what
    :class:`PostQuantDecoder` runs), before anything is converted or copied."""
    if not (hasattr(vae, "decoder") and hasattr(vae, "_decode")):
        raise NotImplementedError(f"{type(vae).__name__} is not an AutoencoderKL-like VAE "
                                  "(decoder + _decode): its decode cannot be compiled here")


def openvino_decoder_vae(vae, precision: str):
    """A private copy of ``vae`` whose decode runs OpenVINO at ``precision``; the user's VAE is
    untouched (its decoder is traced, not modified, and not copied)."""
    check_decodable(vae)
    pqc = getattr(vae, "post_quant_conv", None)
    channels = vae.config.latent_channels

    def make():
        import openvino as ov

        example = torch.randn(1, channels, EXAMPLE_SIZE, EXAMPLE_SIZE)
        return PostQuantDecoder(pqc, vae.decoder), {
            "example_input": example, "input": [ov.PartialShape([-1, channels, -1, -1])]}

    model = converted(vae.decoder, f"vae_decoder:{channels}", make, vae.config)
    # Share (do not copy) the modules the graph replaces, then drop them from the copy.
    shared = {id(vae.decoder): vae.decoder}
    if pqc is not None:
        shared[id(pqc)] = pqc
    clone = copy.deepcopy(vae, memo=shared).eval()
    clone.requires_grad_(False)
    clone.decoder = OpenVINODecoder(CompiledGraph(model, precision))
    if pqc is not None:
        clone.post_quant_conv = torch.nn.Identity()  # folded into the graph
    clone.sdopt_technique = NAME
    return clone


def unavailable_reason(module, device) -> str | None:
    return openvino_unavailable_reason(device, "the OpenVINO VAE decoder")


def apply_pipeline(pipe, params: dict) -> None:
    pipe.vae = openvino_decoder_vae(pipe.vae, params["precision"])


TECHNIQUE = Technique(
    NAME, "pipeline", (Choice("precision", PRECISIONS),),
    tuple({"precision": p} for p in PRECISIONS), lambda p: f"vae_ov_{p['precision']}",
    "VAE decoder compiled with OpenVINO", apply_pipeline, unavailable_reason=unavailable_reason,
    constrained=True, setting_reason=setting_reason, component="vae")
