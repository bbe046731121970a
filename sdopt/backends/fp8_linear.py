"""fp8 (e4m3) linear layers for GPUs with fp8 tensor cores (compute capability 8.9: Ada, Hopper;
``DeviceInfo.precision_unavailable_reason("fp8")`` says where not).

Why only the transformer blocks' linear layers: they are the denoiser's GEMMs (attention
projections and feed-forward, most of a DiT's work and a large share of a UNet's), where fp8
doubles Hopper's tensor-core rate over bf16; the convolutions, the time and condition embeddings
and the blocks' input/output projections stay in bf16, as the published fp8 recipes for diffusion
models (torchao's float8 dynamic quantization, TensorRT's fp8 SD pipelines) keep them.

Scales are per row on both sides ("rowwise": one per token of the activation, one per output
channel of the weight), which keeps the error of a token with large activations from spreading
to the others; the activation's are computed on every call. ``torch._scaled_mm`` with rowwise
scales returns bf16 on CUDA (its CUTLASS kernel is f8f8bf16), so the module runs in bf16. The
weights are quantized once, deterministically, and saved as they are (safetensors stores e4m3).
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
# torch._scaled_mm checks that the reduction and output dimensions are multiples of 16 (the
# rows of the activation may be any number)
ALIGNMENT = 16
# The modules whose linear layers go to fp8: UNets nest them in attentions.N.transformer_blocks,
# DiTs (SD3, PixArt, Flux: also single_transformer_blocks) hold them at the top level.
BLOCKS = "transformer_blocks."


def _rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (2-D) in e4m3 with one float32 scale per row."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(torch.nn.Module):
    """A ``torch.nn.Linear`` whose weight is e4m3 with a scale per output channel; the input is
    quantized per row on each call. Same call and attributes (``in_features``,
    ``out_features``) as the layer it replaces."""

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.out_dtype = dtype
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=FP8,
                                                   device=device))
        # (1, out): the layout _scaled_mm takes for mat2's rowwise scale
        self.register_buffer("weight_scale", torch.ones(1, out_features, dtype=torch.float32,
                                                        device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device)
                             if bias else None)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, dtype: torch.dtype = torch.bfloat16):
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=dtype)
        with torch.no_grad():
            weight, scale = _rowwise(linear.weight.detach())
            layer.weight.copy_(weight)
            layer.weight_scale.copy_(scale.reshape(1, -1))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach().to(dtype))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q, scale = _rowwise(x.reshape(-1, shape[-1]))
        # cuBLASLt takes mat1 row-major and mat2 (the weight's transpose) column-major
        out = torch._scaled_mm(q.contiguous(), self.weight.t(), scale_a=scale,
                               scale_b=self.weight_scale, bias=self.bias,
                               out_dtype=self.out_dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, e4m3 rowwise")


def eligible(name: str, module: torch.nn.Module) -> bool:
    return (isinstance(module, torch.nn.Linear) and BLOCKS in name
            and module.in_features % ALIGNMENT == 0 and module.out_features % ALIGNMENT == 0)


def to_fp8_linears(denoiser: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Replace, in place, the transformer blocks' linear layers by :class:`Fp8Linear`; returns
    how many. A layer whose dimensions are not multiples of 16 stays as it is."""
    chosen = [name for name, m in denoiser.named_modules() if eligible(name, m)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = denoiser.get_submodule(parent_name) if parent_name else denoiser
        setattr(parent, child, Fp8Linear.from_linear(getattr(parent, child), dtype))
    return len(chosen)

