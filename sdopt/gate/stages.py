"""Where the time of one pipeline call goes: text encoder, UNet, VAE decode.

A pipeline call is one number to the gate; split into stages it tells a reviewer whether a
regression is the UNet's or, say, a VAE that fell back to fp32. Forward hooks add each stage's
wall time to the current call's totals, and the call's peak memory is sampled alongside.

On CUDA a hook must not synchronise: two ``torch.cuda.synchronize()`` per UNet call stall the
CPU until the GPU is idle, so the next kernels are launched late, and the end-to-end figure
(which the gate compares) loses the CPU/GPU overlap it has without the hooks (on an H200, 15.3
ms per step in the pipeline against 13.3 ms for the UNet alone). The hooks record CUDA events
on the current stream instead; the bench synchronises once per image, after which the events'
elapsed times are summed (the GPU time from the stage's first to its last kernel, idle gaps
inside it included).
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
        self._starts: dict[str, object] = {}  # a perf_counter() value, or a CUDA event
        self._depth = dict.fromkeys(STAGES, 0)
        self._totals = dict.fromkeys(STAGES, 0.0)
        self._spans: list[tuple[str, object, object]] = []  # CUDA: (stage, start, end) events
        self._free: list = []  # CUDA events whose time has been read, for reuse

    @property
    def totals(self) -> dict[str, float]:
        """Seconds per stage since the last :meth:`reset`. On CUDA, read it after the image's
        synchronisation: the events recorded since are then complete (each is waited for)."""
        if self._spans:
            for stage, start, end in self._spans:
                end.synchronize()  # returns at once once the image has been synchronised
                self._totals[stage] += start.elapsed_time(end) / 1000.0  # ms -> s
                self._free += (start, end)
            self._spans.clear()
        return self._totals

    def _now(self):
        if self._cuda:
            return self._record()
        return time.perf_counter()

    def _record(self):
        """A CUDA event recorded on the current stream: no synchronisation."""
        if self._free:
            event = self._free.pop()
        else:
            import torch

            event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

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
                start = self._starts.pop(stage)
                if self._cuda:
                    self._spans.append((stage, start, self._record()))
                else:
                    self._totals[stage] += self._now() - start
        return hook

    def reset(self) -> None:
        for _stage, start, end in self._spans:
            self._free += (start, end)
        self._spans.clear()
        self._totals = dict.fromkeys(STAGES, 0.0)
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
