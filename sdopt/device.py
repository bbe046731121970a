"""Which hardware we run on, described well enough to refuse comparing unlike machines.

Backends ask this module what the device can do (bf16 units, CUDA), and saved models and results
carry its fingerprint so that a model built for one GPU is not silently run on another.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SdoptError
from .cpu_threads import usable_cpus
from .host_memory import memory_limit_bytes


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu" | "cuda"
    name: str
    cores: int
    cpu_flags: tuple[str, ...] = ()
    cuda_capability: str | None = None
    cuda_version: str | None = None
    memory_gb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def torch_device(self) -> str:
        return "cuda" if self.kind == "cuda" else "cpu"

    def supports_bf16(self) -> tuple[bool, str]:
        import torch

        if self.kind == "cuda":
            # Not torch.cuda.is_bf16_supported(): it says True on a T4 (GitHub's hosted GPU
            # runner, 7.5), where bf16 is emulated and Triton cannot emit it: Inductor warns and
            # runs the graph eager (pytorch/pytorch#118122, #129288).
            if self.capability() >= BF16_MIN_CAPABILITY:
                return True, ""
            need = ".".join(map(str, BF16_MIN_CAPABILITY))
            return False, (f"{self.name} (compute capability {self.cuda_capability}) has no bf16 "
                           f"tensor cores ({need} or newer: Ampere, Ada, Hopper): fp16 is its "
                           "half precision")
        if "avx512_bf16" in self.cpu_flags or "amx_bf16" in self.cpu_flags:
            return True, ""
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return False, (f"{self.name} has no native bf16 (no avx512_bf16/amx_bf16): oneDNN "
                               "would emulate it, which is slower than fp32")
        except Exception:  # noqa: BLE001 - old torch without the probe
            pass
        return False, f"{self.name} has no bf16 instructions (avx512_bf16 or amx_bf16)"

    def precision_unavailable_reason(self, precision: str) -> str | None:
        """Why ``precision`` cannot run fast here (None: it can); bf16 and fp8 depend on the
        hardware among the precisions backends ask about."""
        if precision == "fp8":
            return self._fp8_reason()
        if precision != "bf16":
            return None
        ok, why = self.supports_bf16()
        return None if ok else why

    def capability(self) -> tuple[int, ...]:
        """The GPU's compute capability as (major, minor); () where unknown (a CPU): below
        every minimum."""
        try:
            capability = tuple(int(p) for p in str(self.cuda_capability).split(".")[:2])
        except ValueError:
            return ()
        return capability if len(capability) == 2 else ()

    def _fp8_reason(self) -> str | None:
        need = ".".join(map(str, FP8_MIN_CAPABILITY))
        if self.kind != "cuda":
            return (f"fp8 matmuls need an NVIDIA GPU with fp8 tensor cores (compute capability "
                    f"{need} or newer: Ada, Hopper); the device is {self.kind}")
        if self.capability() < FP8_MIN_CAPABILITY:
            return (f"fp8 matmuls need compute capability {need} or newer (Ada, Hopper); this "
                    f"GPU's is {self.cuda_capability}")
        return None

    def only_slow(self, reason: str | None) -> bool:
        """Whether ``reason`` (a backend's or a technique's) says no more than that bf16 runs
        slowly on this CPU (emulated, no bf16 units): the search skips such a candidate, but
        one named explicitly or saved elsewhere still runs here (a model optimized on a CPU
        with bf16 and reproduced on a runner without it), slower, with a warning."""
        return bool(reason) and self.kind == "cpu" \
            and reason == self.precision_unavailable_reason("bf16")

    def int8_weight_bits(self) -> int:
        """How many bits int8 weights may use here: 7 on an x86 CPU without VNNI, else 8.

        Without VNNI (avx512_vnni, avx_vnni, amx_int8) oneDNN and ONNX Runtime's MLAS multiply
        u8 activations by s8 weights with ``vpmaddubsw``, whose pairwise sums saturate at 16 bits
        (2 x 255 x 127 > 32767); 7-bit weights keep every sum in range (2 x 255 x 63 < 32767):
        NNCF's ``OverflowFix`` and ONNX Runtime's ``reduce_range``. On the tiny UNet on a Zen 3
        (AVX2, GitHub's ubuntu-latest CPU) min/max int8's worst drop fell from 0.20 to 0.074
        with 7-bit weights; VNNI's 32-bit sums do not saturate, so 8 bits keep their precision
        there."""
        return 7 if self.kind == "cpu" and "avx2" in self.cpu_flags and not self.has_vnni() else 8

    def int8_saturation_reason(self, weight_bits: int) -> str | None:
        """Why an int8 graph whose weights use ``weight_bits`` bits computes worse here than
        where it was judged (8-bit weights where int8 sums saturate); None when it does not."""
        if weight_bits <= self.int8_weight_bits():
            return None
        return (f"its int8 weights use {weight_bits} bits and {self.name} has no VNNI, where "
                "int8 products are summed in saturating 16-bit lanes: its outputs are further "
                "from fp32 than when it was judged; optimize on this CPU kind (7-bit weights) to "
                "gate on it")

    def has_vnni(self) -> bool:
        """Whether int8 products are summed in 32-bit lanes (:data:`VNNI_FLAGS`): int8 weights
        keep 8 bits, and OpenVINO fuses int8 attention, only on such CPUs."""
        return any(f in self.cpu_flags for f in VNNI_FLAGS)

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)


# fp8 tensor cores (e4m3 GEMMs through torch._scaled_mm): Ada (8.9) and Hopper (9.0) onwards
FP8_MIN_CAPABILITY = (8, 9)
# bf16 tensor cores: Ampere (8.0) onwards
BF16_MIN_CAPABILITY = (8, 0)
# The CPU flags of a u8 x s8 dot product summed in 32-bit lanes (AVX-512 VNNI, AVX-VNNI, AMX).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                      "amx_int8", "avx_vnni")


def _cpu_name_and_flags() -> tuple[str, tuple[str, ...]]:
    name, flags = platform.processor() or platform.machine(), ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name in ("", platform.processor(), platform.machine()):
                    name = value.strip()
                elif key == "flags" and not flags:
                    present = set(value.split())
                    flags = tuple(f for f in _INTERESTING_FLAGS if f in present)
    except OSError:
        pass
    return name, flags


@functools.lru_cache(maxsize=None)
def detect(requested: str | None = None) -> DeviceInfo:
    """Describe the device to optimize for: ``"cpu"``, ``"cuda"`` or None/``"auto"`` (CUDA if any)."""
    import torch

    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda", "gpu"):
        raise SdoptError(f"device '{requested}' is not known: expected auto, cpu or cuda")
    cuda = torch.cuda.is_available()
    if requested in ("cuda", "gpu") and not cuda:
        raise SdoptError("device 'cuda' was requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
    cpu_name, flags = _cpu_name_and_flags()
    cores = usable_cpus()  # a container's CPU quota, where it is below the affinity
    if cuda and requested != "cpu":
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            kind="cuda", name=props.name, cores=cores, cpu_flags=flags,
            cuda_capability=f"{props.major}.{props.minor}", cuda_version=torch.version.cuda,
            memory_gb=round(props.total_memory / 2**30, 1), extra={"host_cpu": cpu_name},
        )
    limit = memory_limit_bytes()  # a container's limit where it has one: what the search may use
    mem = round(limit / 2**30, 1) if limit else None
    return DeviceInfo(kind="cpu", name=cpu_name, cores=cores, cpu_flags=flags, memory_gb=mem)


def library_versions() -> dict[str, str]:
    """Versions of everything that changes numerics or artifacts (stored with each result)."""
    from importlib import metadata

    versions = {}
    for dist in ("sdopt", "torch", "diffusers", "transformers", "onnxruntime", "onnxruntime-gpu",
                 "openvino", "nncf", "tensorrt", "onnx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
