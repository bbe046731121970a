"""What a technique is: its name, the parameters it takes (with bounds), the settings the search
tries, what it needs from the backend module and the device, how it applies, and whether the
constrained search may use it.

A technique is one module that declares one :class:`Technique`; the registry in
``techniques/__init__.py`` lists them, and nothing else anywhere names a technique.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..backends.base import OptimizedModule
from ..errors import SdoptError

Spec = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """A numeric parameter of a technique, with the bounds a saved spec must respect."""

    name: str
    kind: type  # int or float
    low: float
    high: float

    def check(self, value, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.kind is int and int(value) != value) or not self.low <= value <= self.high:
            raise SdoptError(f"{where}.{self.name} is {value!r}: expected "
                             f"{'an integer' if self.kind is int else 'a number'} from "
                             f"{self.low:g} to {self.high:g}")


@dataclass(frozen=True)
class Choice:
    """A parameter naming one of a few settings (a precision), checked like a :class:`Param`
    when a saved spec is read back."""

    name: str
    values: tuple[str, ...]
    # absent from specs saved before the parameter existed, which then keep their behaviour
    optional: bool = False

    def check(self, value, where: str) -> None:
        if value is None and self.optional:
            return
        if value not in self.values:
            raise SdoptError(f"{where}.{self.name} is {value!r}: expected one of "
                             f"{', '.join(map(repr, self.values))}")


@dataclass(frozen=True)
class Technique:
    """``level`` "unet": ``apply(module, params, original_unet) -> module`` wraps or patches the
    backend's module; "pipeline": ``apply(pipe, params)`` replaces a pipeline component with a
    private copy. ``order`` sorts UNet-level techniques when several stack (lower first)."""

    name: str
    level: str
    params: tuple[Param | Choice, ...]
    settings: tuple[Spec, ...]  # what the search tries
    label: Callable[[Spec], str]
    doc: str
    apply: Callable
    # Why it cannot run with this backend module on this device (None: it can).
    unavailable_reason: Callable[[OptimizedModule, Any], str | None] = lambda module, device: None
    constrained: bool = False  # a precision change, not an approximation: constrained mode too
    order: int = 0
    # Why one setting (its params) cannot run on this device, on top of ``unavailable_reason``
    # (an fp32 setting meant only for CPUs without bf16 units, say).
    setting_reason: Callable[[Spec, Any], str | None] = lambda params, device: None
    # The pipeline component a pipeline-level technique replaces ("vae", "text_encoder"): two
    # techniques replacing the same one cannot stack (the second would wrap the first's copy).
    component: str | None = None
    # Why this technique cannot stack with the ``others`` (the stack's other UNet-level specs) on
    # this backend module (None: it can): what each setting's own check on the bare module
    # cannot see.
    stack_reason: Callable[[list[Spec], OptimizedModule], str | None] = \
        lambda others, module: None
    # Whether, on this backend module, the technique builds on the given pipeline's denoiser
    # weights rather than the module's own (token merging converting an OpenVINO pick again):
    # load_model then needs the weights the model was optimized from.
    reads_given_denoiser: Callable[[OptimizedModule], bool] = lambda module: False
    # Host memory applying it to this backend module adds at its peak, in copies of the
    # denoiser's fp32 weights (None: not measured, nothing beyond the module's): the search skips
    # it when that does not fit, as it skips a backend candidate (Backend.memory_copies).
    memory_copies: Callable[[OptimizedModule], float | None] = lambda module: None

    def check(self, spec: Spec, where: str) -> None:
        for param in self.params:
            param.check(spec.get(param.name), where)


def cuda_only_reason(what: str, cpu_instead: str, device) -> str | None:
    """Why a CUDA component setting (``what``) is not tried on ``device``; the reason names the
    setting that compiles the same component there (``cpu_instead``)."""
    kind = getattr(device, "kind", "cpu")
    if kind != "cuda":
        return (f"{what} is CUDA's setting; the device is {kind}, where {cpu_instead} is the "
                "compiled one")
    return None


class StepCacheBase(OptimizedModule):
    """What the UNet and the DiT step caches share: the wrapped module, the interval and the
    call counters tests and the table read."""

    def __init__(self, inner: OptimizedModule, interval: int, model, why: str | None):
        super().__init__()
        if model is None:
            raise ValueError(f"step caching cannot wrap this module: {why}")
        if interval < 1:
            raise ValueError(f"step cache interval is {interval}: expected an integer >= 1")
        self.technique_inner = inner
        self.variant = inner.variant
        self.interval = int(interval)
        self.full_calls = 0
        self.cached_calls = 0

    def reset(self) -> None:
        """A new generation: nothing cached, step 0 (a subclass caching more overrides it)."""
        self._cached = None
        self._step = 0
        self._last_t: float | None = None
        self._key = None

    def _begin_step(self, sample, timestep, encoder_hidden_states, extra=()) -> bool:
        """Whether this call runs the shallow path on the cached feature (counted either way);
        a call that starts a new generation resets the cache first. An ``extra`` input the
        shallow path does not recompute (anything but SDXL's added conditions: a ControlNet
        residual...) makes every step a full one."""
        self._last_t = self._generation_timestep(sample, timestep, encoder_hidden_states)
        use = self._cached is not None and self._step % self.interval != 0 and \
            set(extra) <= {"added_cond_kwargs"}
        self._step += 1
        if use:
            self.cached_calls += 1
        else:
            self.full_calls += 1
        return use

    def _generation_timestep(self, sample, timestep, encoder_hidden_states) -> float:
        """The call's timestep; a call that starts a new generation (the timestep went up, or
        other shapes or device) resets the cache first (subclasses define ``reset``)."""
        import torch

        t = float(timestep.float().reshape(-1)[0]) if torch.is_tensor(timestep) else float(timestep)
        key = (tuple(sample.shape), tuple(encoder_hidden_states.shape), sample.device)
        if self._last_t is None or t > self._last_t or key != self._key:
            self.reset()
            self._key = key
        return t


class PerPassStepCache(StepCacheBase):
    """A DiT step cache's bookkeeping: one cache per pass of a step, because a pipeline that
    calls the transformer twice per step (Flux's true CFG: the prompt, then the negative
    prompt) must reuse each pass's own. Subclasses store a full call's cache in
    ``self._per_pass[self._pass]``."""

    def reset(self) -> None:
        super().reset()
        self._per_pass: dict[int, object] = {}
        self._pass = 0
        self._reuse = False

    def _reuses(self, sample, timestep, encoder_hidden_states) -> bool:
        """Whether this call reuses its pass's cache (counted as a cached or a full call)."""
        t = self._generation_timestep(sample, timestep, encoder_hidden_states)
        if self._last_t is not None and t == self._last_t:
            self._pass += 1  # another pass of the same step
        else:
            self._pass = 0
            self._reuse = bool(self._per_pass) and self._step % self.interval != 0
            self._step += 1
        self._last_t = t
        reuse = self._reuse and self._pass in self._per_pass
        if reuse:
            self.cached_calls += 1
        else:
            self.full_calls += 1
        return reuse
