"""A component setting timed on its component alone, side by side with what it replaces.

A constrained search's component settings (the VAE decoder, the text encoders, in another
precision or runtime) change what runs once per image, not per step. Timed on whole images
(three of the setting alternating with three of its base) they cost 37 s and 30 s of a cold
sd15 search at 256 px; on one-step generations still 30 s and 21 s, most of it what the two
pipelines share (the fp32 decoder, the text encoder, two UNet calls). So the capture records
the calls that enter each replaceable component while the original makes its first image (the
text encoders' calls, the latents the VAE decodes), and a setting is timed by replaying those
calls on its pipeline and on the one it is stacked on, alternating: the difference of two
replays is what one image saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..techniques import text_encoder_openvino
from ..backends.base import map_tensors
from .paired import interleave
from .table import BASE_LEVEL

# Rounds of replays per setting: at least MIN, more while they take under SECONDS (the fp32
# VAE decode at 256 px is 2.4 s, a text encoding 0.3 s), two when they decide (setting_saving).
SETTING_ROUNDS, SETTING_MIN_ROUNDS, SETTING_SECONDS = 7, 3, 8.0


@dataclass
class ComponentCalls:
    """The calls one image makes into each replaceable component:
    ``calls[component]`` is a list of (pipeline attribute, args, kwargs)."""

    calls: dict[str, list[tuple[str, tuple, dict]]] = field(default_factory=dict)

    def replay(self, pipe, component: str) -> None:
        """Make ``component``'s calls of one image on ``pipe``'s: the VAE through ``decode``
        (what the pipeline calls, around whatever the setting put in), a text encoder as the
        pipeline calls it."""
        if component not in self.calls:
            raise RuntimeError(f"the capture recorded no call of the pipeline's {component}: "
                               "its setting cannot be timed")
        for attribute, args, kwargs in self.calls[component]:
            if component == "vae":
                pipe.vae.decode(*args, return_dict=False)
            else:
                getattr(pipe, attribute)(*args, **kwargs)


class ComponentRecorder:
    """Forward pre-hooks that record the calls entering each replaceable component of the
    original pipeline until :meth:`stop`: the VAE's latents (the input of ``post_quant_conv``,
    or of the decoder when there is none: what ``decode`` received) and every supported text
    encoder's calls."""

    def __init__(self, pipe):
        self.recorded = ComponentCalls()
        self._handles = []
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "decode"):
            entry = getattr(vae, "post_quant_conv", None) or getattr(vae, "decoder", None)
            if entry is not None:
                self._hook(entry, "vae", "vae")
        for name in text_encoder_openvino.COMPONENTS:
            module = getattr(pipe, name, None)
            if text_encoder_openvino.is_supported(module):
                self._hook(module, "text_encoder", name)

    def _hook(self, module: torch.nn.Module, component: str, attribute: str) -> None:
        def record(_, args, kwargs):
            self.recorded.calls.setdefault(component, []).append(
                (attribute, tuple(detached(a) for a in args),
                 {k: detached(v) for k, v in kwargs.items()}))

        self._handles.append(module.register_forward_pre_hook(record, with_kwargs=True))

    def stop(self) -> ComponentCalls:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.recorded


def setting_saving(calls: ComponentCalls, component: str, pipe, on, *, device_kind: str,
                   decisive_s: float | None = None) -> dict[str, float]:
    """The seconds per image ``pipe`` saves over ``on`` on ``component``: one untimed replay on
    ``pipe`` (a new component compiles on its first call; ``on``'s ran already), then rounds
    alternating the two; the median of the per-round differences, with their quartiles.
    ``decisive_s``: when the first two rounds both save at least this much, or both lose it,
    they are all the rounds (sd15's VAE decoder at 256 px: 3.4 s a round)."""
    with torch.inference_mode():
        calls.replay(pipe, component)

    def decided(rounds) -> bool:
        saved = [r - c for r, c in zip(rounds.samples_s[BASE_LEVEL], rounds.samples_s["row"])]
        return decisive_s is not None and (all(s >= decisive_s for s in saved)
                                           or all(s <= -decisive_s for s in saved))

    rounds = interleave({"row": lambda i: calls.replay(pipe, component),
                         BASE_LEVEL: lambda i: calls.replay(on, component)},
                        rounds=SETTING_ROUNDS, warmup=0, min_rounds=SETTING_MIN_ROUNDS,
                        max_seconds=SETTING_SECONDS, device_kind=device_kind, decided=decided)
    return rounds.difference("row", BASE_LEVEL)


def detached(value):
    """A copy of ``value``'s tensors (nested in tuples, lists, dicts) cut from the graph: what
    a hook keeps of a call."""
    return map_tensors(value, lambda t: t.detach().clone())
