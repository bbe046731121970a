"""OpenVINO on CPU: fp32, bf16 (inference precision hint) and NNCF post-training int8.

Measured for the SD 1.5 UNet at 256 px, batch 2, on this AVX-512 bf16/VNNI CPU: converted
straight from the torch module (``openvino.convert_model``, about 22 s), bf16 runs about 3.0x
fp32 eager; NNCF int8 calibrated on real UNet inputs (``model_type=TRANSFORMER``), compiled with
the bf16 hint for what stays in floating point, about 3.7x with 6.4% relative L2 error; the
search's threshold decides whether that is acceptable. The converted IR (fp32 weights, shared by
the fp32 and bf16 variants: only the compile hint differs) and the quantized IR are cached
(:mod:`sdopt.cache`); IR .xml/.bin is also the saved format (no pickle).
"""

from __future__ import annotations

import logging
import re
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch

from .. import deps
from ..cpu_threads import openvino_thread_config
from ..device import DeviceInfo
from ..host_memory import available_memory_bytes
from ..errors import SdoptError
# calibration_hash is part of this module's interface.
from .export import DIT_EDGE_MODULES, calibration_hash, is_transformer  # noqa: F401
from .openvino_minmax_int8 import BF16_STATISTICS_WEIGHT_COPIES
from .base import Backend, BuildContext, OptimizedModule, UNetInputs, Variant, register

log = logging.getLogger(__name__)

IR_XML, IR_BIN = "unet.xml", "unet.bin"
# NNCF's default is 300; the search holds out a few dozen calls at most, and more samples cost
# minutes of calibration on CPU for no measured gain (DESIGN: 16 of 22 gave 6.4%).
INT8_SUBSET_MAX = 64
# CPU memory a build adds at its peak, in copies of the fp32 weights (Backend.memory_copies), per
# precision, int8 per quantizer. The compiled model beside the pipeline's weights; int8 builds
# first convert to an fp32 IR and run a statistics pass: min/max in bf16 when fp32 does not fit
# (the figure given here; openvino_minmax_int8 chooses), NNCF's in fp32 with its bias-correction
# subgraphs. Anonymous peaks: fp32 1.37, bf16 0.87, min/max int8 1.11 (bf16 statistics; 1.67
# with fp32 ones), NNCF int8 2.47 (benchmarks/candidate_memory.py, tiny UNet widened to 800 MB,
# 2026-12-01); min/max int8 with the capture's ranges (no statistics pass) 0.65, bf16 0.83
# (2026-12-03); int8 weights (NNCF compress_weights of the fp32 IR) 1.28 (2026-12-04).
MEMORY_COPIES = {"fp32": 1.4, "bf16": 0.9, "int8/minmax": BF16_STATISTICS_WEIGHT_COPIES,
                 "int8/minmax+capture-ranges": 0.7, "int8/nncf": 2.5, "int8/weights": 1.3}
# The UNet's first and last convolutions, as named in the IR converted from diffusers' UNet.
INT8_EDGE_PATTERNS = (".*conv_in.*", ".*conv_out.*")
# A DiT transformer's first and last layers (export.DIT_EDGE_MODULES) as named in its IR (module
# path, then "/" and the op), anchored on a "." before the export wrapper's ``unet.`` so that
# the attention blocks' own ``proj_out`` layers stay int8.
DIT_EDGE_PATTERNS = tuple(rf".*\.{re.escape(module)}/.*" for module in DIT_EDGE_MODULES)


def float_layers_precision(device: DeviceInfo) -> str:
    """What an int8 variant's floating-point layers run in (its compile hint, _hint_for): bf16
    where the CPU has it (3.7x vs 2.9-3.2x with f32 on sd15), else fp32. The labels say which:
    a CPU without bf16 (Ice Lake, Zen 3) runs them in fp32."""
    return "bf16" if device.supports_bf16()[0] else "fp32"


def edge_label(precision: str, *, transformer: bool = False) -> str:
    """int8-inner's label: the layers its ignored scope keeps in floating point (in
    ``precision``) on a UNet, or on a DiT transformer (Backend.techniques_for)."""
    layers = "patch embedding/final projection" if transformer else "conv_in/conv_out"
    return f"{layers} {precision}"


_DIT_EDGE_WORDS = {edge_label(p): edge_label(p, transformer=True) for p in ("bf16", "fp32")}
MINMAX_LABEL = "int8 post-training (min/max ranges, one pass)"
# Offered on CPUs without VNNI only (OpenVINO._without_vnni): convolutions alone in int8, by
# min/max ranges, and NNCF's calibration of the same layers.
CONV_MINMAX, CONV_NNCF = "int8-conv-minmax", "int8-conv-nncf"
# A partial int8 variant is slower than any of these: it is tried only when they were rejected.
# (Without VNNI the two convolution-only ones are the fastest int8 there: ordering's
# SLOWER_WITHOUT_VNNI.)
INT8_MORE_AGGRESSIVE = ["int8-minmax", "int8-inner-minmax", "int8", "int8-inner", CONV_MINMAX,
                        CONV_NNCF]


def edge_patterns(denoiser: torch.nn.Module, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The ignored scope of ``int8-inner`` for this denoiser: a transformer has no conv_in or
    conv_out (the UNet's patterns would match nothing and leave the variant full int8), so its
    own first and last layers are kept in floating point instead. Other scopes are unchanged."""
    if tuple(patterns) == INT8_EDGE_PATTERNS and is_transformer(denoiser):
        return DIT_EDGE_PATTERNS
    return tuple(patterns)


def _hint_for(variant: Variant, device: DeviceInfo) -> str:
    if variant.precision == "fp32":
        return "f32"
    if variant.precision == "bf16":
        return "bf16"
    return {"bf16": "bf16", "fp32": "f32"}[float_layers_precision(device)]


class CompiledPerShape:
    """An ``openvino.Model`` compiled for CPU with one precision hint (``INFERENCE_PRECISION_HINT``),
    once per static input shapes: a converted IR keeps dynamic shapes, and a compile for the
    run's static shapes runs faster. The UNet backend and the component techniques (VAE decoder,
    text encoders) run their graphs through it."""

    def __init__(self, model, hint: str):
        import openvino as ov

        self.model = model
        self.hint = hint
        self.names = [p.get_any_name() for p in model.inputs]
        self._core = ov.Core()
        self._requests: dict[tuple, Any] = {}

    def compile_for(self, shapes, config: dict[str, Any] | None = None):
        """The model compiled for static input ``shapes`` (one per input, in the model's order)
        as a call compiles it; ``config`` adds CPU properties (sdopt.backends.openvino_ops reads
        the runtime graph of it)."""
        model = self.model.clone()
        model.reshape({name: list(shape) for name, shape in zip(self.names, shapes)})
        return self._core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.hint,
                                                       **openvino_thread_config(), **(config or {})})

    def infer(self, arrays):
        """Run on ``arrays`` (numpy, in the model's input order); the infer request holding the
        outputs, compiled on the first call with these shapes."""
        shapes = tuple(tuple(a.shape) for a in arrays)
        request = self._requests.get(shapes)
        if request is None:
            request = self._requests[shapes] = self.compile_for(shapes).create_infer_request()
        request.infer(dict(zip(self.names, arrays)))
        return request


class OpenVINOModule(OptimizedModule):
    """A compiled OpenVINO model behind the UNet's call (:class:`CompiledPerShape`)."""

    def __init__(self, ir_dir: Path, variant: Variant, hint: str, build_info: dict[str, Any]):
        super().__init__()
        import openvino as ov

        self.variant = variant
        self.hint = hint
        self.ir_dir = Path(ir_dir)
        self.build_info = build_info
        self.graph = CompiledPerShape(ov.Core().read_model(str(self.ir_dir / IR_XML)), hint)

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        from .export import named_args

        given = named_args(UNetInputs(sample, timestep, encoder_hidden_states, extra))
        names = self.graph.names
        missing = [name for name in names if name not in given]
        if missing:
            raise NotImplementedError(f"{self.variant.id} was converted for the inputs "
                                      f"{names}; this call lacks {missing}")
        request = self.graph.infer([given[name].detach().cpu().numpy() for name in names])
        out = torch.from_numpy(request.get_output_tensor(0).data.copy())
        return out.to(device=sample.device, dtype=sample.dtype)

    def size_bytes(self) -> int:
        return (self.ir_dir / IR_BIN).stat().st_size


def convert_torch(module: torch.nn.Module, example_input, share_weights: bool = True, **kwargs):
    """``openvino.convert_model`` of a torch module, traced once. OpenVINO's PyTorch frontend
    traces with ``torch.jit.trace``, whose default ``check_trace`` runs the model again and
    compares the graphs: 17.6 of the 22.6 s of tracing the sd15 UNet at 256 px (cProfile,
    2026-12-01). OpenVINO's own notebooks build the decoder with ``check_trace=False`` the same
    way; the converted model is checked numerically against the original by every caller."""
    import openvino as ov
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about diffusers' shape checks
        decoder = TorchScriptPythonDecoder(module.eval(), example_input=example_input,
                                           shared_memory=share_weights,
                                           trace_kwargs={"check_trace": False})
        return ov.convert_model(decoder, example_input=example_input,
                                share_weights=share_weights, **kwargs)


def convert_unet(unet: torch.nn.Module, example: UNetInputs):
    """The UNet as an ``openvino.Model`` with fp32 weights shared with the torch module."""
    from .export import for_export, input_names, unet_args

    model = convert_torch(for_export(unet, example), unet_args(example))
    names = input_names(example)
    if len(model.inputs) != len(names):
        raise RuntimeError(f"openvino.convert_model gave {len(model.inputs)} inputs for the "
                           f"{len(names)} the denoiser was called with ({', '.join(names)})")
    for port, name in zip(model.inputs, names):
        port.get_tensor().set_names({name})
    CONVERSIONS["convert_model"] += 1
    return model


def write_ir(model, directory: Path) -> dict[str, Any]:
    import openvino as ov

    # fp32 weights: compress_to_fp16 would make the "fp32" variant lossy.
    ov.save_model(model, str(directory / IR_XML), compress_to_fp16=False)
    return {"converter": "openvino.convert_model", "openvino": ov.get_version()}


def _calibration_items(model, calibration: list[UNetInputs]) -> list[dict[str, Any]]:
    from .export import named_args

    names = [p.get_any_name() for p in model.inputs]
    return [{n: t.numpy() for n, t in named_args(c).items() if n in names}
            for c in calibration]


def _quantize_minmax(source: "FP32IR", calibration: list[UNetInputs], directory: Path,
                     ignored_types: tuple[str, ...] = (),
                     ignored_patterns: tuple[str, ...] = (),
                     statistics: str = "f32", recorded: list[dict] = (),
                     weight_bits: int = 8) -> dict[str, Any]:
    from .openvino_minmax_int8 import quantize_minmax

    from .openvino_minmax_int8 import statistics_shortfall

    def check_memory() -> None:  # the capture's ranges missed a tensor: a statistics pass runs
        reason = statistics_shortfall(source.weights_bytes(), available_memory_bytes(),
                                      statistics)
        if reason:
            raise SdoptError(reason)

    model = source.model()
    built = quantize_minmax(model, _calibration_items(model, calibration[:INT8_SUBSET_MAX]),
                            directory / IR_XML, ignored_types=ignored_types,
                            ignored_patterns=ignored_patterns, statistics=statistics,
                            recorded=recorded[:INT8_SUBSET_MAX], before_statistics=check_memory,
                            weight_bits=weight_bits)
    CONVERSIONS["minmax"] += 1
    return built


def _quantize(source: "FP32IR", calibration: list[UNetInputs], directory: Path,
              ignored_types: tuple[str, ...] = (), preset: str | None = None,
              ignored_patterns: tuple[str, ...] = (), weight_bits: int = 8) -> dict[str, Any]:
    import nncf
    import openvino as ov

    model = source.model().clone()  # NNCF's graph edits stay off the shared model
    items = _calibration_items(model, calibration)
    subset = min(len(items), INT8_SUBSET_MAX)
    scope = nncf.IgnoredScope(types=list(ignored_types), patterns=list(ignored_patterns),
                              validate=False) if ignored_types or ignored_patterns else None
    extra = {"preset": nncf.QuantizationPreset(preset)} if preset else {}
    if weight_bits == 7:  # every layer's weights in 7 bits (DeviceInfo.int8_weight_bits)
        extra["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix.ENABLE)
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=subset, ignored_scope=scope, **extra)
    ov.save_model(quantized, str(directory / IR_XML), compress_to_fp16=False)
    CONVERSIONS["nncf.quantize"] += 1
    return {"quantizer": "nncf.quantize", "model_type": "TRANSFORMER", "subset_size": subset,
            "ignored_types": list(ignored_types), "ignored_patterns": list(ignored_patterns),
            "preset": preset or "performance", "nncf": nncf.__version__,
            "weight_bits": weight_bits}


def int8_weights(model):
    """A copy of ``model`` (an ``openvino.Model``, left as it is) with int8 weights (asymmetric,
    per output channel), data-free: the CPU plugin then runs each layer with int8 weights on
    int8 activations quantized per group of 32 as it goes (its ``DYNAMIC_QUANTIZATION_GROUP_SIZE``
    default), which is what makes optimum-intel's SDXL UNet 1.13x faster than bf16 per call here
    (benchmarks/results/openvino_int8_weights_sdxl_512.json) with no calibration and no
    statistics pass. The graph of ``openvino/int8-weights``."""
    import nncf

    return nncf.compress_weights(model.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM)


def _compress_weights(source: "FP32IR", directory: Path) -> dict[str, Any]:
    import nncf
    import openvino as ov

    ov.save_model(int8_weights(source.model()), str(directory / IR_XML), compress_to_fp16=False)
    CONVERSIONS["nncf.compress_weights"] += 1
    return {"quantizer": "nncf.compress_weights", "mode": "int8_asym", "nncf": nncf.__version__}


def saturation_reason(build_info: dict[str, Any], device: DeviceInfo) -> str | None:
    """Why a saved int8 graph computes worse here than where it was judged: 8-bit weights on a
    CPU whose int8 dot products saturate (``DeviceInfo.int8_weight_bits``); None when not."""
    int8 = build_info.get("int8") or {}
    if int8.get("quantizer") not in ("minmax", "nncf.quantize"):
        return None  # float, or int8-weights (activations quantized by the plugin as it runs)
    return device.int8_saturation_reason(int(int8.get("weight_bits", 8)))


# How many conversions and quantizations this process really ran (the cache's hits do not
# count): lets tests assert a cache hit instead of guessing from timings.
CONVERSIONS = {"convert_model": 0, "nncf.quantize": 0, "minmax": 0, "derived": 0,
               "nncf.compress_weights": 0}


def _derived_partial(source: "FP32IR", parts: dict[str, Any], ignored: tuple[str, ...],
                     patterns: tuple[str, ...], ctx: BuildContext):
    """The partial int8 IR derived from the full int8 one calibrated on the same inputs, when
    the cache holds it (the search tries the partial variants only after full int8); None when
    it does not, or the graph edit cannot express this scope (then it is calibrated)."""
    from ..cache import fetch_or_build, peek
    from ._ov_partial_int8 import DERIVABLE_TYPES, NotDerivable, derive_partial_int8

    if any(t not in DERIVABLE_TYPES for t in ignored):
        return None  # MatMuls in floating point: only a calibration without them gives that
    full_parts = {k: v for k, v in parts.items()
                  if k not in ("ignored_types", "ignored_patterns")}
    full = peek("openvino-int8", full_parts, root=ctx.cache_dir)
    if full is None:
        return None

    def derive(tmp: Path) -> dict[str, Any]:
        built = derive_partial_int8(full.path / IR_XML, source.model(), tmp / IR_XML,
                                    ignored_types=ignored, ignored_patterns=patterns)
        CONVERSIONS["derived"] += 1
        return {**full.built, "ignored_types": list(ignored),
                "ignored_patterns": list(patterns), "full_int8_key": full.key, **built}

    try:
        return fetch_or_build("openvino-int8", {**parts, "derived_from": full.key}, derive,
                              root=ctx.cache_dir)
    except NotDerivable as exc:
        warnings.warn(f"sdopt: calibrating the partial int8 model instead of deriving it "
                      f"({exc})", stacklevel=2)
        return None


# A UNet -> (its fp32 IR's cache key, the openvino.Model converted from it in this process). Weak:
# a dropped pipeline's UNet is not kept alive (the model shares its weights).
_IN_MEMORY: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[str, Any]]" = \
    weakref.WeakKeyDictionary()


class FP32IR:
    """The fp32 IR of one UNet at the run's shapes: the cache's entry when it holds one, else the
    model converted in this process (once per UNet), whose files are written to the cache only
    when a build needs them (the fp32 and bf16 variants compile from the files). The min/max
    int8 builds and the partial int8 derivations take it in memory: writing sd15's 3.3 GB IR
    took 9 s of a 272 s cold demo search on a disk that writes 375 MB/s."""

    KIND = "openvino-ir"

    def __init__(self, unet: torch.nn.Module, ctx: BuildContext):
        import openvino as ov

        from ..cache import make_key, peek
        from .export import unet_key_parts

        self._unet, self._cache_dir = unet, ctx.cache_dir
        self._example = ctx.example
        self.parts = {**unet_key_parts(unet, ctx.example), "openvino": ov.get_version(),
                      "precision": "fp32"}
        self.key = make_key({"kind": self.KIND, **self.parts})
        self._entry = peek(self.KIND, self.parts, root=ctx.cache_dir)
        self._model = None
        # where the model came from: the cache, this process's earlier conversion, or now
        self.source = "cache" if self._entry is not None else None

    def model(self):
        """The IR as an ``openvino.Model`` (shared: clone it before editing)."""
        if self._model is None:
            import openvino as ov

            if self._entry is not None:
                self._model = ov.Core().read_model(str(self._entry.path / IR_XML))
            else:
                memo = _IN_MEMORY.get(self._unet)
                self.source = "process"
                if memo is None or memo[0] != self.key:
                    model = convert_unet(self._unet, self._example)
                    memo = _IN_MEMORY[self._unet] = (self.key, model)
                    self.source = "converted"
                self._model = memo[1]
        return self._model

    def path(self) -> Path:
        """The cache entry's directory holding the IR's files, written now when it has none."""
        if self._entry is None:
            from ..cache import fetch_or_build

            model = self.model()
            self._entry = fetch_or_build(self.KIND, self.parts, lambda tmp: write_ir(model, tmp),
                                         root=self._cache_dir)
        return self._entry.path

    def weights_bytes(self) -> int:
        """The fp32 weights' bytes (the IR's .bin when on disk)."""
        if self._entry is not None:
            return (self._entry.path / IR_BIN).stat().st_size
        return sum(t.numel() * 4 for t in self._unet.state_dict().values())

    def info(self) -> dict[str, Any]:
        """For the build info: ``hit`` when no conversion ran for this build."""
        return {"hit": self.source != "converted", "key": self.key,
                "source": self.source or "not needed",
                **(self._entry.built if self._entry is not None else {}),
                "written": self._entry is not None}


@register
class OpenVINO(Backend):
    name = "openvino"
    aliases = ("ov", "openvino_compiler")

    def memory_copies(self, variant: Variant, ctx: BuildContext | None = None) -> float | None:
        if variant.options.get("quantizer") == "weights":
            return MEMORY_COPIES["int8/weights"]
        if variant.precision == "int8":
            if variant.options.get("quantizer") != "minmax":
                return MEMORY_COPIES["int8/nncf"]
            # Ranges the capture recorded: no statistics pass, unless they miss a tensor (a pass
            # then checks the memory it needs itself: openvino_minmax_int8.statistics_shortfall).
            recorded = ctx is not None and ctx.calibration_ranges
            return MEMORY_COPIES["int8/minmax" + ("+capture-ranges" if recorded else "")]
        return MEMORY_COPIES.get(variant.precision)

    def build_activity(self, variant: Variant) -> str:
        if variant.options.get("quantizer") == "minmax":
            return "converting to OpenVINO and measuring int8 ranges (one pass)"
        if variant.options.get("quantizer") == "weights":
            return "converting to OpenVINO and compressing weights to int8 (NNCF)"
        if variant.options.get("quantizer"):
            return "converting to OpenVINO and calibrating int8 (NNCF)"
        return "converting to OpenVINO and compiling"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        rest = float_layers_precision(device)  # what the int8 variants leave in float runs in
        return [
            Variant(self.name, "fp32", "fp32", options={"hint": "f32"}, lossless=True,
                    techniques=("openvino",)),
            Variant(self.name, "bf16", "bf16", options={"hint": "bf16"},
                    techniques=("openvino", "bf16 inference precision")),
            *self._without_vnni(device, rest),
            # int8 from min/max ranges in one statistics pass (openvino_minmax_int8): about 30 s
            # on sd15 at 256 px where NNCF takes 250 s, the same int8 graph and speed, a little
            # more error (no SmoothQuant or bias correction). Tried first.
            Variant(self.name, "int8-minmax", "int8", options={"quantizer": "minmax"},
                    techniques=("openvino", MINMAX_LABEL)),
            Variant(self.name, "int8-inner-minmax", "int8",
                    options={"quantizer": "minmax", "ignored_patterns": list(INT8_EDGE_PATTERNS),
                             "fallback_of": ["int8-minmax"]},
                    techniques=("openvino", MINMAX_LABEL, edge_label(rest))),
            # int8 weights only, data-free (NNCF compress_weights, as optimum-intel does for
            # submodels of >= 1e9 weights): the plugin quantizes activations per group as it
            # runs. Less error than the min/max variants and a fraction of their gain over bf16
            # (1.14x on the SDXL UNet at 512 px), and no calibration memory: tried when they
            # did not pass (SDXL on 24 GiB: min/max over the threshold, NNCF does not fit).
            Variant(self.name, "int8-weights", "int8",
                    options={"quantizer": "weights", "fallback_of": INT8_MORE_AGGRESSIVE},
                    techniques=("openvino", "int8 weights (NNCF, data-free)",
                                f"activations quantized per group at run time, {rest} elsewhere")),
            # NNCF's calibration of the same graphs, for its smaller error: tried only when no
            # min/max variant passed (full and inner int8 run within noise of each other: 3.8-4.0x
            # and 3.82x on sd15, docs/backends.md), and bounded by its twin's measured speed.
            Variant(self.name, "int8", "int8",
                    options={"quantizer": "nncf", "same_graph_as": ["int8-minmax"],
                             "rescue_of": ["int8-minmax", "int8-inner-minmax"]},
                    techniques=("openvino", "int8 post-training (NNCF, calibrated)")),
            # Less error for less speed, tried only when the more aggressive variants before them
            # were rejected. First the network's ends in bf16 (conv_in sees the raw latent,
            # conv_out writes the noise prediction): on sd15 they carry much of full int8's error.
            Variant(self.name, "int8-inner", "int8",
                    options={"quantizer": "nncf", "ignored_patterns": list(INT8_EDGE_PATTERNS),
                             "fallback_of": ["int8", "int8-minmax"],
                             "same_graph_as": ["int8-inner-minmax"]},
                    techniques=("openvino", "int8 post-training (NNCF, calibrated)",
                                edge_label(rest))),
            # Then only one kind of layer in int8, the other in bf16.
            Variant(self.name, "int8-matmul", "int8",
                    options={"quantizer": "nncf", "ignored_types": ["Convolution"],
                             "fallback_of": INT8_MORE_AGGRESSIVE},
                    techniques=("openvino", "int8 MatMul (NNCF, calibrated)",
                                f"{rest} convolutions")),
            Variant(self.name, "int8-conv", "int8",
                    options={"quantizer": "nncf", "ignored_types": ["MatMul"],
                             "fallback_of": INT8_MORE_AGGRESSIVE},
                    techniques=("openvino", "int8 convolutions (NNCF, calibrated)",
                                f"{rest} MatMul")),
        ]

    def _without_vnni(self, device: DeviceInfo, rest: str) -> list[Variant]:
        """On a CPU without VNNI, int8 MatMuls run slower than float ones and int8 attention
        runs decomposed (OpenVINO's counters on a Zen 3, sd15 at 256 px: int8 FullyConnected
        1098 ms against 900 in f32, int8 attention 281-298 ms against 189 fused), while int8
        convolutions still run 2.4x f32's: there, convolutions alone in int8 (min/max, the
        network's ends and every MatMul and attention in float) ran 1.10x and 1.14x
        ``int8-inner-minmax`` side by side, with less error (worst drop 0.056 against 0.059;
        benchmarks/results/int8_float_scope_sd15_256_zen3.json). Tried first there
        (``ordering.PRIORS``), and the int8 variants with more int8 layers are bounded by their
        speed (``ordering.SLOWER_WITHOUT_VNNI``); not offered where int8 MatMuls pay."""
        if device.kind != "cpu" or device.has_vnni():
            return []
        scope = {"ignored_types": ["MatMul", "ScaledDotProductAttention"],
                 "ignored_patterns": list(INT8_EDGE_PATTERNS)}
        in_float = f"{rest} MatMul, attention and conv_in/conv_out"
        return [Variant(self.name, CONV_MINMAX, "int8", options={"quantizer": "minmax", **scope},
                        techniques=("openvino", "int8 convolutions (min/max ranges, one pass)",
                                    in_float)),
                # NNCF's calibration of the same layers, for its smaller error: on random-weight
                # sd15 at 256 px the min/max one's worst drop was 0.056, over a 0.05 threshold
                # (results/int8_float_scope_sd15_256_zen3.json). Tried only when it was rejected,
                # and bounded by its measured speed.
                Variant(self.name, CONV_NNCF, "int8",
                        options={"quantizer": "nncf", **scope, "same_graph_as": [CONV_MINMAX],
                                 "rescue_of": [CONV_MINMAX]},
                        techniques=("openvino", "int8 convolutions (NNCF, calibrated)",
                                    in_float))]

    def techniques_for(self, variant: Variant, denoiser: torch.nn.Module) -> tuple[str, ...]:
        """int8-inner keeps a DiT's patch embedding and final layers (export.DIT_EDGE_MODULES:
        pos_embed.proj or x_embedder, norm_out.linear, proj_out) in floating point, not the
        UNet's conv_in/conv_out (edge_patterns, which the build uses): the label says which.
        The variant, its options and its cache keys stay the same for every family."""
        patterns = tuple(variant.options.get("ignored_patterns", ()))
        if patterns and edge_patterns(denoiser, patterns) == DIT_EDGE_PATTERNS:
            return tuple(_DIT_EDGE_WORDS.get(t, t) for t in variant.techniques)
        return variant.techniques

    def model_reason(self, variant: Variant, denoiser: torch.nn.Module) -> str | None:
        """int8-conv puts only convolutions in int8: Flux's transformer has none (its patch
        embedding is a linear layer), so the variant would be the bf16 one under an int8 name."""
        if variant.precision != "int8" or "MatMul" not in variant.options.get("ignored_types", ()):
            return None
        convolutions = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        patterns = tuple(variant.options.get("ignored_patterns", ()))
        if patterns and edge_patterns(denoiser, patterns) == DIT_EDGE_PATTERNS:
            # a DiT's one convolution is its patch embedding, one of the ends kept in float
            return (f"{type(denoiser).__name__} has no convolution but its patch embedding, "
                    f"which {variant.id} keeps in float: it would put no layer in int8")
        if any(isinstance(m, convolutions) for m in denoiser.modules()):
            return None
        return (f"{type(denoiser).__name__} has no convolution: {variant.id} would put no layer "
                "in int8 (it would be the bf16 variant)")

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if device.kind != "cpu":
            return (f"sdopt runs OpenVINO on CPU only; the device is {device.kind} "
                    "(OpenVINO's GPU plugin is for Intel GPUs)")
        reason = deps.unavailable_reason("openvino", "OpenVINO")
        if reason:
            return reason
        if variant.precision == "bf16":
            return device.precision_unavailable_reason("bf16")
        if variant.options.get("quantizer") == "nncf":
            return deps.unavailable_reason("nncf", "int8 calibration")
        if variant.options.get("quantizer") == "weights":
            return deps.unavailable_reason("nncf", "int8 weight compression")
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        source = FP32IR(unet, ctx)
        info: dict[str, Any] = {}
        if variant.precision != "int8":
            ir_dir = source.path()
        elif variant.options.get("quantizer") == "weights":
            from ..cache import fetch_or_build

            q = fetch_or_build("openvino-int8-weights",
                               {"source": source.key, "mode": "int8_asym",
                                "nncf": deps.version("nncf")},
                               lambda tmp: _compress_weights(source, tmp), root=ctx.cache_dir)
            info["int8"] = {"hit": q.hit, "key": q.key, **q.built}
            ir_dir = q.path
        else:
            if not ctx.calibration:
                raise SdoptError(f"{variant.id} needs calibration inputs (UNet calls recorded "
                                 "from the pipeline): use optimize_model, which collects them")
            from ..cache import fetch_or_build

            ignored = tuple(variant.options.get("ignored_types", ()))
            patterns = edge_patterns(unet, tuple(variant.options.get("ignored_patterns", ())))
            preset = variant.options.get("preset")
            minmax = variant.options.get("quantizer") == "minmax"
            parts = {"source": source.key, "calibration": calibration_hash(ctx.calibration),
                     "subset_max": INT8_SUBSET_MAX}
            statistics, why = "f32", None
            # Absent when 8, so that IRs cached before the key had it stay valid.
            bits = ctx.device.int8_weight_bits()
            if bits != 8:
                parts["weight_bits"] = bits
            if minmax:
                from .openvino_minmax_int8 import RECIPE, statistics_precision

                parts.update(quantizer="minmax", recipe=RECIPE)
                statistics, why = statistics_precision(
                    source.weights_bytes(), available_memory_bytes(),
                    ctx.device.precision_unavailable_reason("bf16"))
                if why:
                    parts["statistics"] = statistics  # absent when fp32: cached IRs stay valid
            else:
                parts.update(model_type="TRANSFORMER", nncf=deps.version("nncf"))
            # Absent when default, so that the full int8 variant's cached IR stays valid.
            if ignored:
                parts["ignored_types"] = list(ignored)
            if patterns:
                parts["ignored_patterns"] = list(patterns)
            if preset:
                parts["preset"] = preset
            q = None
            # A DiT's ends include linear layers (MatMul), which are never derivable.
            if (ignored or patterns) and not preset and patterns != DIT_EDGE_PATTERNS:
                q = _derived_partial(source, parts, ignored, patterns, ctx)
            if q is None:
                def quantize(tmp: Path) -> dict[str, Any]:
                    if minmax:
                        return _quantize_minmax(source, ctx.calibration, tmp, ignored, patterns,
                                                statistics, ctx.calibration_ranges, bits)
                    return _quantize(source, ctx.calibration, tmp, ignored, preset, patterns,
                                     bits)

                q = fetch_or_build("openvino-int8", parts, quantize, root=ctx.cache_dir)
            if why and q.built.get("ranges", "statistics pass").startswith("statistics pass"):
                log.warning("sdopt: %s: %s", variant.id, why)  # not when the capture's were used
            info["int8"] = {"hit": q.hit, "key": q.key, **q.built}
            ir_dir = q.path
        info = {"ir": source.info(), **info}
        return OpenVINOModule(ir_dir, variant, _hint_for(variant, ctx.device), info)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        from .export import copy_artifact

        assert isinstance(module, OpenVINOModule)
        copy_artifact(module.ir_dir, directory, (IR_XML, IR_BIN))
        return {"ir": IR_XML, "weights": IR_BIN, "hint": module.hint,
                "build": module.build_info}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        for name in (IR_XML, IR_BIN):
            if not (directory / name).is_file():
                raise SdoptError(f"'{directory / name}' is missing: the saved model is incomplete")
        why = saturation_reason(info.get("build", {}), device)
        if why:
            log.warning("sdopt: %s: %s", variant.id, why)
        try:
            return OpenVINOModule(directory, variant, _hint_for(variant, device),
                                  dict(info.get("build", {})))
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SdoptError(f"'{directory / IR_XML}' is corrupt: OpenVINO cannot read it "
                             f"({first[:200]})") from exc
