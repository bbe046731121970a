"""Token merging for Stable Diffusion (ToMe for SD, Bolya & Hoffman 2023).

Before the self-attention of the highest-resolution transformer blocks, the most similar tokens
are merged (bipartite soft matching: one destination token per 2x2 cell, each other token joins
its most similar destination; the ``ratio`` best-matched are merged), attention runs on the
shorter sequence, and the result is copied back to every merged position. The matching below is
the algorithm of the ``tomesd`` package (MIT), with a fixed-seed destination choice so that a
saved model gives the same images in another process.

The ``tomesd`` package (0.1.3) also runs with diffusers 0.42, but it replaces the class of every
transformer block of ``pipe.unet`` with its own copy of a 2023 ``forward``; this module only
swaps the attention *processor* of the chosen self-attention layers of the backend's UNet (an
interface diffusers keeps stable) and leaves the weights, and so the saved artifacts, unchanged.
Attention costs grow with the square of the tokens, so the gain is large at 512 px and above and
small at 256 px, where the highest-resolution blocks have 1024 tokens.

DiTs: PixArt's blocks have a self-attention over the image tokens alone (``attn1``, then a
cross-attention to the text), all at one resolution (the patch grid): the same processor merges
tokens before every block's self-attention. SD3's and Flux's blocks attend jointly over text and
image tokens (MMDiT): there is no self-attention over image tokens to merge in, and the technique
is skipped for them, saying so.
"""

from __future__ import annotations

import functools
import math

import torch

from ..backends.base import OptimizedModule
from . import token_merge_openvino
from .base import Param, Technique
from .eager import dit_blocks, eager_dit, eager_unet, private_copy

NAME = "token_merge"
RATIOS = (0.3, 0.5)
SEED = 0


@functools.lru_cache(maxsize=64)
def destination_choice(hsy: int, wsx: int, cells: int) -> torch.Tensor:
    """Which token of each ``sy x sx`` cell is a destination: a seeded draw, the same for the
    same grid (read only by its callers). Drawn once per grid and kept, so that a graph traced
    after an eager call holds it as a constant: OpenVINO's converter cannot convert
    ``aten::randint`` with a generator."""
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(cells, size=(hsy, wsx, 1), generator=generator)


def bipartite_soft_matching_2d(metric: torch.Tensor, w: int, h: int, r: int,
                               sx: int = 2, sy: int = 2):
    """Merge and unmerge functions that remove ``r`` of the ``h x w`` tokens of ``metric``."""
    B, N, _ = metric.shape
    if r <= 0 or h < sy or w < sx:
        return (lambda x: x), (lambda x: x)
    device = metric.device
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        rand_idx = destination_choice(hsy, wsx, sy * sx).to(device)
        view = torch.zeros(hsy, wsx, sy * sx, device=device, dtype=torch.int64)
        view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx))
        view = view.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
        if hsy * sy < h or wsx * sx < w:
            buffer = torch.zeros(h, w, device=device, dtype=torch.int64)
            buffer[:hsy * sy, :wsx * sx] = view
        else:
            buffer = view
        order = buffer.reshape(1, -1, 1).argsort(dim=1)
        num_dst = hsy * wsx
        a_idx, b_idx = order[:, num_dst:, :], order[:, :num_dst, :]

        def split(x):
            c = x.shape[-1]
            src = torch.gather(x, dim=1, index=a_idx.expand(B, N - num_dst, c))
            dst = torch.gather(x, dim=1, index=b_idx.expand(B, num_dst, c))
            return src, dst

        normed = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(normed)
        scores = a @ b.transpose(-1, -2)
        r = min(a.shape[1], r)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
        dst_idx = torch.gather(node_idx[..., None], dim=-2, index=src_idx)

    # Each destination becomes the mean of itself and the sources merged into it (tomesd's
    # scatter_reduce "mean"), computed as a matrix product with the sources' one-hot assignment:
    # OpenVINO runs the scatter with reduction in a single-threaded reference kernel, 115 ms per
    # sd15 layer at 512 px, more than merging saved in attention; a product is a GEMM.
    # Counted in fp32: OpenVINO 2026.4's CPU plugin summed the int64 one-hot wrongly for every
    # batch item but the first, and bf16 counts stop being exact past 256.
    assignment = torch.nn.functional.one_hot(dst_idx[..., 0], num_dst).to(torch.float32)
    merged_per_dst = 1 + assignment.sum(dim=1)[..., None]  # (B, num_dst, 1)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = split(x)
        n, t1, c = src.shape
        unm = torch.gather(src, dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = torch.gather(src, dim=-2, index=src_idx.expand(n, r, c))
        summed = dst + assignment.transpose(1, 2).to(x.dtype) @ src
        dst = summed / merged_per_dst.to(x.dtype)
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        c = unm.shape[-1]
        src = torch.gather(dst, dim=-2, index=dst_idx.expand(B, r, c))
        out = torch.zeros(B, N, c, device=x.device, dtype=x.dtype)
        out.scatter_(dim=-2, index=b_idx.expand(B, num_dst, c), src=dst)
        a_full = a_idx.expand(B, a_idx.shape[1], 1)
        out.scatter_(dim=-2, index=torch.gather(a_full, 1, unm_idx).expand(B, unm_len, c),
                     src=unm)
        out.scatter_(dim=-2, index=torch.gather(a_full, 1, src_idx).expand(B, r, c), src=src)
        return out

    return merge, unmerge


class TokenMergeProcessor:
    """Wraps an attention processor: merge before self-attention, unmerge after."""

    def __init__(self, inner, ratio: float, grid: dict):
        self.inner = inner
        self.ratio = float(ratio)
        self.grid = grid  # {"hw": latent (H, W)}, set by a pre-hook on conv_in
        self.tokens_in = 0  # what tests count: tokens that reached the attention, before/after
        self.tokens_attended = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        hw = self.grid.get("hw")
        if encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3 \
                and hw is not None:
            n = hidden_states.shape[1]
            factor = round(math.sqrt(hw[0] * hw[1] / n))
            h, w = math.ceil(hw[0] / factor), math.ceil(hw[1] / factor)
            if h * w == n:
                merge, unmerge = bipartite_soft_matching_2d(hidden_states, w, h,
                                                            int(n * self.ratio))
                merged = merge(hidden_states)
                self.tokens_in += n
                self.tokens_attended += merged.shape[1]
                out = self.inner(attn, merged, None, None, temb, *args, **kwargs)
                return unmerge(out)
        n = hidden_states.shape[1] if hidden_states.ndim == 3 else 0
        self.tokens_in += n
        self.tokens_attended += n
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                          *args, **kwargs)


def self_attentions(unet, levels: int = 1):
    """The self-attention layers of the ``levels`` highest resolutions that have attention."""
    down = [i for i, b in enumerate(unet.down_blocks) if getattr(b, "attentions", None)]
    chosen = set(down[:levels])
    n = len(unet.up_blocks)
    blocks = [unet.down_blocks[i] for i in sorted(chosen)]
    blocks += [unet.up_blocks[n - 1 - i] for i in sorted(chosen)
               if getattr(unet.up_blocks[n - 1 - i], "attentions", None)]
    out = []
    for block in blocks:
        for name, module in block.named_modules():
            if name.endswith("attn1") and hasattr(module, "set_processor"):
                out.append(module)
    return out


def _image_self_attentions(model) -> list:
    """A DiT's self-attention layers over image tokens alone (PixArt's ``attn1``), or none."""
    out = []
    for block in dit_blocks(model):
        attn = getattr(block, "attn1", None)
        if attn is None or getattr(attn, "is_cross_attention", True) or \
                getattr(block, "only_cross_attention", False) or \
                not hasattr(attn, "set_processor"):
            return []
        out.append(attn)
    return out


def _dit_reason(model) -> str | None:
    """Why token merging does not apply to this DiT (None: it does, like PixArt's)."""
    if not _image_self_attentions(model):
        return (f"{type(model).__name__}'s blocks attend jointly over text and image tokens "
                "(MMDiT): token merging merges image tokens before a self-attention over image "
                "tokens alone, which these blocks do not have")
    if getattr(model, "pos_embed", None) is None or \
            not hasattr(model.pos_embed, "patch_size"):
        return (f"{type(model).__name__} has no patch embedding whose grid token merging could "
                "follow")
    return None


def _target(module: OptimizedModule):
    """(the eager model, its self-attention layers, the module the grid comes from) or
    (None, why not, None)."""
    unet, why = eager_unet(module)
    if unet is not None:
        return unet, None, unet.conv_in
    model, dit_why = eager_dit(module)
    if model is None:
        return None, why, None
    reason = _dit_reason(model)
    if reason:
        return None, reason, None
    return model, _image_self_attentions(model), model.pos_embed


def _install(model, layers, grid_source, ratio: float) -> None:
    """Token merging's processors on ``layers`` of ``model`` (a UNet's highest resolution when
    ``layers`` is None), the grid read from ``grid_source``'s input."""
    grid: dict = {}

    def record(mod, args):
        grid["hw"] = tuple(args[0].shape[-2:])

    grid_source.register_forward_pre_hook(record)
    if layers is None:  # a UNet: the highest resolution's self-attention
        layers = self_attentions(model, 1)
    if not layers:
        raise ValueError("the UNet has no self-attention layers to merge tokens in")
    for attn in layers:
        attn.set_processor(TokenMergeProcessor(attn.processor, ratio, grid))


def apply(module: OptimizedModule, params: dict, original_unet) -> OptimizedModule:
    if token_merge_openvino.runs_openvino(module):
        return token_merge_openvino.OpenVINOTokenMergeModule(
            module, merged_unet(original_unet, float(params["ratio"])))
    module = private_copy(module, original_unet)
    model, layers, grid_source = _target(module)
    if model is None:
        raise ValueError(f"token merging cannot patch this module: {layers}")
    _install(model, layers, grid_source, float(params["ratio"]))
    return module


def merged_unet(original_unet: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A copy of the diffusers UNet with token merging's processors, sharing its weights: what
    an OpenVINO graph with the merging in it is converted from."""
    unet = private_copy(original_unet, original_unet)
    _install(unet, None, unet.conv_in, ratio)
    return unet


def incompatible_reason(module: OptimizedModule, device=None) -> str | None:
    if token_merge_openvino.runs_openvino(module):
        return token_merge_openvino.incompatible_reason(module)
    model, why, _ = _target(module)
    return why if model is None else None


def processors(module: OptimizedModule) -> list[TokenMergeProcessor]:
    unet, _ = eager_unet(module)
    if unet is None:
        unet, _ = eager_dit(module)
    if unet is None:
        return []
    return [m.processor for m in unet.modules()
            if isinstance(getattr(m, "processor", None), TokenMergeProcessor)]


TECHNIQUE = Technique(
    NAME, "unet", (Param("ratio", float, 0.0, 0.9),), tuple({"ratio": r} for r in RATIOS),
    lambda p: f"token_merge({p['ratio']:g})",
    "merge similar tokens before self-attention at the highest resolution (ToMe for SD; every "
    "block of PixArt)", apply,
    unavailable_reason=incompatible_reason, order=0,
    reads_given_denoiser=token_merge_openvino.runs_openvino,
    memory_copies=token_merge_openvino.memory_copies)
