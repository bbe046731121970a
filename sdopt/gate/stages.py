"""Where the time of one pipeline call goes: text encoder, UNet, VAE decode.

A pipeline call is one number to the gate; split into stages it tells a reviewer whether a
regression is the UNet's or, say, a VAE that fell back to fp32. Forward hooks add each stage's
wall time to the current call's totals, and the call's peak memory is sampled alongside.
"""

from __future__ import annotations

import time
from typing import Callable

from ..models import denoiser_of
from ..optimize.timing import RssSampler

STAGES = ("text_encoder", "unet", "vae_decode")


class StageTimer:
    """Forward hooks that add each stage's wall time to the current call's totals.

    The VAE decode is not a ``forward``: the pipeline calls ``vae.decode``, which runs
    ``post_quant_conv`` and ``decoder``, so those two submodules are hooked. Modules shared by
    two pipelines (with_unet shares everything but the UNet) are hooked once.
    """

    def __init__(self, device_kind: str = "cpu"):
        self._cuda = device_kind == "cuda"
        self._handles: list = []
        self._hooked: set[int] = set()
        self._starts: dict[str, float] = {}
        self._depth = dict.fromkeys(STAGES, 0)
        self.totals = dict.fromkeys(STAGES, 0.0)

    def _now(self) -> float:
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def attach(self, pipe) -> None:
        vae = getattr(pipe, "vae", None)
        for stage, module in (("text_encoder", getattr(pipe, "text_encoder", None)),
                              ("unet", denoiser_of(pipe)),  # the UNet or a DiT
                              ("vae_decode", getattr(vae, "post_quant_conv", None)),
                              ("vae_decode", getattr(vae, "decoder", None))):
            if module is None or id(module) in self._hooked or not hasattr(module,
                                                                           "register_forward_hook"):
                continue
            self._hooked.add(id(module))
            self._handles.append(module.register_forward_pre_hook(self._pre(stage)))
            self._handles.append(module.register_forward_hook(self._post(stage)))

    # A stage can nest in itself: an optimized UNet that wraps the original UNet object (the fp32
    # reference does) runs both modules' hooks. Only the outermost call of a stage is timed.
    def _pre(self, stage: str) -> Callable:
        def hook(_module, _args):
            if self._depth[stage] == 0:
                self._starts[stage] = self._now()
            self._depth[stage] += 1
        return hook

    def _post(self, stage: str) -> Callable:
        def hook(_module, _args, _output):
            self._depth[stage] = max(0, self._depth[stage] - 1)
            if self._depth[stage] == 0 and stage in self._starts:
                self.totals[stage] += self._now() - self._starts.pop(stage)
        return hook

    def reset(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self._depth = dict.fromkeys(STAGES, 0)
        self._starts.clear()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked.clear()


class PeakMemory:
    """Peak memory of one call: CUDA max allocated on GPU, else the process RSS (sampled)."""

    def __init__(self, device_kind: str):
        self.kind = "cuda_allocated" if device_kind == "cuda" else "rss"
        self._sampler = None

    def __enter__(self):
        if self.kind == "cuda_allocated":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._sampler = RssSampler()
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_allocated":
            import torch

            self.peak = int(torch.cuda.max_memory_allocated())
        else:
            self.peak = int(self._sampler.stop())
