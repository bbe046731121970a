"""Step caching for DiTs (SD3, Flux, PixArt): reuse the transformer blocks' outputs between
neighbouring denoising steps, as FORA does (Selvaraju et al. 2024, "FORA: Fast-Forward Caching
in Diffusion Transformer Acceleration").

DeepCache's scheme (:mod:`.step_cache`) needs a UNet's skip connections; a DiT is a stack of
same-shape transformer blocks between the patch embedding and the final layer. FORA observes
that each block's attention and MLP outputs change little from one step to the next and, every
``interval``-th step, computes them and caches them; the steps in between reuse them. Here the
cache is at block granularity: a full step records what each block adds to its input (its output
minus its input, for the image stream and, in the joint-attention blocks of SD3 and Flux, the text
stream: the gated attention and MLP outputs FORA caches, with their adaLN gates); a cached step
runs the embeddings (timestep, text, patches), adds each block's recorded contribution instead of
running the block, and runs the final norm and projection. Nothing is approximated on full steps;
a cached step costs the embeddings and the output layer only.

The blocks are patched only for the duration of a call (an instance ``forward`` that is removed
afterwards), so the backend module, which other candidates of a search share, and the user's
transformer stay unchanged, and saving the module saves the same weights. State is reset as in
:mod:`.step_cache`: a new generation (the pipeline's ``scheduler.set_timesteps``), a timestep that
goes up or an input shape that changes.
"""

from __future__ import annotations

import torch

from ..backends.base import OptimizedModule
from .base import PerPassStepCache
from .eager import dit_blocks, eager_dit


class DiTStepCacheModule(PerPassStepCache):
    def __init__(self, inner: OptimizedModule, interval: int):
        model, why = eager_dit(inner)
        super().__init__(inner, interval, model, why)
        self._blocks = dit_blocks(model)  # a plain list: not registered again as submodules
        self.blocks_run = 0  # blocks really computed (what tests count)
        self.blocks_reused = 0
        self.reset()

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        reuse = self._reuses(sample, timestep, encoder_hidden_states)
        if not reuse:
            self._per_pass[self._pass] = [None] * len(self._blocks)
        residuals = self._per_pass[self._pass]
        saved = [block.__dict__.get("forward") for block in self._blocks]
        for index, block in enumerate(self._blocks):
            block.forward = self._patched(index, residuals, saved[index] or type(block).forward
                                          .__get__(block), reuse)
        try:
            return self.technique_inner(sample, timestep, encoder_hidden_states, **extra)
        finally:
            for block, previous in zip(self._blocks, saved):
                if previous is None:
                    block.__dict__.pop("forward", None)
                else:
                    block.forward = previous

    def _patched(self, index: int, residuals: list, forward, reuse: bool):
        def run(*args, **kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            context = kwargs.get("encoder_hidden_states")
            stored = residuals[index]
            if reuse and stored is not None:
                self.blocks_reused += 1
                if isinstance(stored, tuple):  # (text stream, image stream): SD3's, Flux's
                    d_context, d_hidden = stored
                    return (None if d_context is None else context + d_context,
                            hidden + d_hidden)
                return hidden + stored
            self.blocks_run += 1
            out = forward(*args, **kwargs)
            if isinstance(out, tuple):
                new_context, new_hidden = out
                residuals[index] = (
                    None if new_context is None or context is None
                    or new_context.shape != context.shape else new_context - context,
                    new_hidden - hidden if new_hidden.shape == hidden.shape else None)
                if residuals[index][1] is None:
                    residuals[index] = None
            elif torch.is_tensor(out) and out.shape == hidden.shape:
                residuals[index] = out - hidden
            return out

        return run


def incompatible_reason(module: OptimizedModule, device=None) -> str | None:
    return eager_dit(module)[1]
