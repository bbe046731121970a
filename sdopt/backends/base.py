"""The backend interface and its registry.

A backend turns the pipeline's UNet into something faster that takes the same inputs. Each one is
a module of its own behind :class:`Backend` (the optimum-benchmark model): it lists the variants it
can try (precisions, options), says for each whether it can run on this device and why not,
builds the optimized module, and saves/loads it in safe formats. The search knows nothing else
about it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..device import DeviceInfo
from ..errors import SdoptError


@dataclass(frozen=True)
class Variant:
    """One candidate a backend can build: a precision and the options that make it different."""

    backend: str
    name: str
    precision: str  # "fp32" | "bf16" | "fp16" | "int8"
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # Keeps fp32 arithmetic (only reassociation differs): allowed when no metric drop is allowed.
    lossless: bool = False
    techniques: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.backend}/{self.name}"

    def related_ids(self, *keys: str) -> set[str]:
        """The ids of the same backend's variants named in these options (``fallback_of``,
        ``same_graph_as``, ``rescue_of``), which the search orders and skips by."""
        return {f"{self.backend}/{name}" for key in keys for name in self.options.get(key) or ()}


@dataclass
class BuildContext:
    """What a backend may use while building: the device, example inputs, calibration data."""

    device: DeviceInfo
    example: "UNetInputs"
    calibration: list["UNetInputs"] = field(default_factory=list)
    cache_dir: Path | None = None
    # Per calibration call, the activation ranges the capture recorded (activation_ranges);
    # empty where it did not record them
    calibration_ranges: list[dict] = field(default_factory=list)


@dataclass
class UNetInputs:
    """One UNet call as the pipeline made it (classifier-free guidance doubles the batch)."""

    sample: torch.Tensor
    timestep: torch.Tensor
    encoder_hidden_states: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: str) -> "UNetInputs":
        return UNetInputs(map_tensors(self.sample, lambda t: t.to(device)),
                          map_tensors(self.timestep, lambda t: t.to(device)),
                          map_tensors(self.encoder_hidden_states, lambda t: t.to(device)),
                          map_tensors(self.extra, lambda t: t.to(device)))


def map_tensors(value, fn):
    """``fn`` applied to every tensor in ``value``, through dicts, lists and tuples: SDXL passes
    its added conditions as a dict (``added_cond_kwargs``), and a copy or a move that missed them
    would leave them behind on another device or alias the pipeline's buffers."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def distinct_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """The module's parameters and buffers, each shared tensor once."""
    seen, out = set(), []
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def fp32_weights_bytes(module: torch.nn.Module) -> int:
    """The bytes of the module's weights in fp32 (what conversions and exports write, whatever
    the dtype the pipeline holds them in)."""
    return 4 * sum(t.numel() for t in distinct_tensors(module))


class OptimizedModule(torch.nn.Module):
    """What ``Backend.build`` returns: called like the UNet's core, returns the noise prediction.

    ``forward(sample, timestep, encoder_hidden_states, **extra)`` takes and returns tensors in the
    pipeline's dtype; casting to the backend's precision happens inside.
    """

    variant: Variant

    def size_bytes(self) -> int:
        """Bytes of weights the module holds (the 'model size' row of the summary)."""
        return sum(t.numel() * t.element_size() for t in distinct_tensors(self))


class Backend(abc.ABC):
    """One compiler or runtime. Subclasses set ``name`` and bump ``version`` when their saved
    artifacts change format, so that an old saved model is refused instead of misread."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    # Names Speedster users pass in ignore_compilers for the same thing.
    aliases: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def variants(self, device: DeviceInfo) -> list[Variant]:
        """Every variant this backend knows for the device kind (available or not)."""

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        """None when the variant can run here, else the precise reason it cannot."""
        return None

    def model_reason(self, variant: Variant, denoiser: torch.nn.Module) -> str | None:
        """None when ``variant`` does something to ``denoiser``, else why it would not (it puts
        in int8 a kind of layer the model has none of): the search skips it with the reason
        instead of measuring another variant under its name."""
        return None

    def memory_copies(self, variant: Variant, ctx: "BuildContext | None" = None) -> float | None:
        """The anonymous memory (what the kernel cannot reclaim) that building ``variant`` and
        calling it adds at its peak, in copies of the denoiser's fp32 weights, as measured by
        ``benchmarks/candidate_memory.py``; None where not measured (the search then does not
        check). ``ctx``: what the build will get (a min/max int8 build given the capture's
        ranges runs no statistics pass). Next to its own pipeline the SDXL UNet (10.3 GB) leaves about one copy free on
        a 24 GiB machine: a build that needs more is skipped with the figures, instead of
        stalling the machine or getting the whole search killed."""
        return None

    def build_activity(self, variant: Variant) -> str:
        """What building ``variant`` spends its time on (compiling, exporting, calibrating), for
        the search's progress line: a build can take minutes, and the user should see why."""
        return "building"

    def techniques_for(self, variant: Variant, denoiser: torch.nn.Module) -> tuple[str, ...]:
        """What ``variant`` does to ``denoiser``, in the words of the search's table, the
        bench's results and a saved manifest: ``variant.techniques``, unless what the variant
        does depends on the model's family (OpenVINO's ``int8-inner``). Only a label: never
        part of the variant's id, its options or any cache key."""
        return variant.techniques

    @abc.abstractmethod
    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        """Build the optimized module from the pipeline's UNet (which must stay unchanged)."""

    @abc.abstractmethod
    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        """Write the module's artifacts into ``directory``; return what load needs (JSON-safe)."""

    @abc.abstractmethod
    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        """Rebuild the module saved in ``directory`` around the given pipeline's UNet."""


BACKENDS: dict[str, Backend] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls()
    return cls


def get_backend(name: str) -> Backend:
    from . import load_builtin_backends

    load_builtin_backends()
    canonical = canonical_backend_name(name)
    return BACKENDS[canonical]


def canonical_backend_name(name: str) -> str:
    """Map a backend name or a Speedster compiler alias to our name; unknown names are errors."""
    from . import load_builtin_backends

    load_builtin_backends()
    key = str(name).strip().lower()
    if key in BACKENDS:
        return key
    for backend in BACKENDS.values():
        if key in backend.aliases:
            return backend.name
    raise SdoptError(f"unknown backend name '{name}': expected one of "
                     f"{', '.join(sorted(BACKENDS))}")
