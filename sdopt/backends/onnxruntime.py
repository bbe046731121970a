"""ONNX Runtime: CPU EP fp32, dynamic and static (QDQ) int8, CUDA EP fp16 (ONNX Runtime's SD
graph fusions, IO binding, CUDA graphs), TensorRT EP fp16.

Measured for the SD 1.5 UNet at 256 px, batch 2, here: CPU fp32 1.5-1.6x fp32 eager with outputs
identical to 1e-6; dynamic int8 of MatMul/Gemm only 1.85x, but of Conv+MatMul 0.67x (ONNX
Runtime's ConvInteger is slow), hence ``op_types_to_quantize=["MatMul", "Gemm"]``. Static int8
quantizes Conv too, as QDQ pairs that ONNX Runtime fuses into QLinearConv/QLinearMatMul (VNNI
kernels), with activation ranges calibrated (MinMax) on the UNet calls the search recorded. Sessions use
full graph optimization and ``session.intra_op.allow_spinning=0``: spinning worker threads keep
the cores busy after a call and slow whatever runs next in the process (the next candidate, the
VAE). The ONNX export and the int8 model are cached (:mod:`sdopt.cache`); the saved artifact is
the ONNX model with its external data (no pickle).

The CUDA provider (``cuda-fp16``) runs the graph ONNX Runtime's own Stable Diffusion optimizer
makes (``onnxruntime.transformers.optimizer.optimize_model(..., model_type="unet")`` with
``FusionOptions("unet")``, as its SD demo's ``ort_optimizer.py`` does: MultiHeadAttention with
packed QKV/KV, GroupNorm and SkipGroupNorm (channels last), BiasSplitGelu, BiasAdd, NhwcConv,
(Skip)LayerNormalization; then fp16). Its README measures the CUDA provider at 10.2 s -> 4.7 s
per image with it. The fusions match the graph the TorchScript exporter writes with diffusers'
classic attention processor (what the demo exports): the dynamo exporter's GroupNorm and SDPA
patterns are not fused, so this path has its own export (:func:`onnx_sd_export_entry`). The
session runs with CUDA graphs (``enable_cuda_graph``): inputs are copied into buffers bound
once, since a replayed graph reads the addresses it captured; where ONNX Runtime refuses the
graph (a node not on the CUDA provider) the session is made without it and ``build_info`` says
why. The TensorRT provider and native TensorRT take the plain fp16 conversion of the export
(TensorRT cannot run ONNX Runtime's contrib ops; the fp32 export of an SD 1.5 UNet is 3.4 GB,
over protobuf's 2 GB).

The CUDA and TensorRT variants are written for CUDA machines; on a CPU they are listed and
skipped with the reason. ``tests/backends/test_onnxruntime_cuda.py`` builds and runs them, saves
and loads them, against a fake session that follows onnxruntime's InferenceSession/IOBinding
API, and checks the fusions numerically on the CPU provider (those it has kernels for).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from .. import deps
from ..cpu_threads import set_onnxruntime_threads
from ..device import DeviceInfo
from ..errors import SdoptError
from ..logs import quiet_root_logger
from .base import Backend, BuildContext, OptimizedModule, UNetInputs, Variant, register

INT8_OPS = ("MatMul", "Gemm")
STATIC_INT8_OPS = ("Conv", "MatMul", "Gemm")
# Calibration runs the fp32 model once per sample; ranges settle well before this many.
STATIC_SUBSET_MAX = 32
log = logging.getLogger(__name__)
_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
# ONNX Runtime's SD optimizer: the fusions it applies to a UNet (FusionOptions("unet")) whose
# contrib ops only the CUDA provider has kernels for (onnxruntime's CPU build cannot run them),
# by the option that turns each off.
CUDA_ONLY_FUSIONS = {"enable_group_norm": "GroupNorm", "enable_skip_group_norm": "SkipGroupNorm",
                     "enable_bias_splitgelu": "BiasSplitGelu", "enable_nhwc_conv": "NhwcConv",
                     "enable_bias_add": "BiasAdd"}
# MultiHeadAttention with packed QKV (self) / KV (cross) inputs: CUDA kernels only.
CUDA_ONLY_PACKING = ("enable_packed_qkv", "enable_packed_kv")
SD_EXPORTERS = ("legacy", "dynamo")
_TORCH_TYPES = {"float32": torch.float32, "float16": torch.float16}


def _onnx_path(directory: Path) -> Path:
    from .export import ONNX_FILE

    return directory / ONNX_FILE


def elf_needed(path: Path) -> list[str]:
    """The shared libraries an ELF64 little-endian library links (its DT_NEEDED entries), read
    from the file: no loader, no CUDA, no binutils needed."""
    import struct

    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"'{path}' is not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        sections = []
        for i in range(shnum):
            f.seek(shoff + i * shentsize)
            _, kind, _, _, offset, size, link = struct.unpack("<IIQQQQI", f.read(44))
            sections.append((kind, offset, size, link))
        names = []
        for kind, offset, size, link in sections:
            if kind != 6:  # SHT_DYNAMIC
                continue
            f.seek(sections[link][1])
            strings = f.read(sections[link][2])
            f.seek(offset)
            table = f.read(size)
            for tag, value in struct.iter_unpack("<qQ", table):
                if tag == 0:  # DT_NULL
                    break
                if tag == 1:  # DT_NEEDED
                    names.append(strings[value:strings.index(b"\0", value)].decode())
        return names


def tensorrt_provider_major(capi: Path) -> int | None:
    """The libnvinfer major version onnxruntime's TensorRT provider library links (None: this
    build has no TensorRT provider library)."""
    library = capi / "libonnxruntime_providers_tensorrt.so"
    if not library.is_file():
        return None
    for name in elf_needed(library):
        if name.startswith("libnvinfer.so."):
            return int(name.rsplit(".", 1)[1])
    return None


def tensorrt_provider_conflict(capi: Path, tensorrt: str | None,
                               onnxruntime: str | None) -> str | None:
    """Why the TensorRT provider in ``capi`` cannot load beside the installed TensorRT version
    ``tensorrt``: its library links one libnvinfer major (onnxruntime-gpu 1.31's CUDA 13 build
    links libnvinfer.so.10, the image's native TensorRT is 11), and ONNX Runtime would fail to
    create the provider. None when they agree or either is unknown."""
    try:
        linked = tensorrt_provider_major(capi)
    except (OSError, ValueError):
        return None
    if linked is None or tensorrt is None or int(tensorrt.split(".")[0]) == linked:
        return None
    return (f"the TensorRT provider of onnxruntime {onnxruntime} links libnvinfer.so.{linked} "
            f"(TensorRT {linked}), but the installed TensorRT is {tensorrt} (another major: pip "
            "cannot install both); use the native tensorrt backend, or an environment with "
            f"TensorRT {linked}.x for this provider")


def output_shape(graph: list, sample: list[int]) -> list[int]:
    """The IO-binding buffer for the UNet's output: the graph's shape, not the sample's (an
    inpainting UNet takes 9 channels and returns 4); a dimension the export left symbolic
    (batch, height, width) is the sample's at that position."""
    return [d if isinstance(d, int) and d > 0 else sample[i] for i, d in enumerate(graph)]


def tensorrt_version() -> str | None:
    """TensorRT's version for cache keys, whichever wheel installed it: the `tensorrt`
    metapackage, tensorrt-cu13 alone, or only the libraries wheel the provider loads."""
    from importlib import metadata

    found = deps.version("tensorrt")
    for dist in ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs"):
        if found:
            break
        try:
            found = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def cuda_graph_enabled(providers: list) -> bool:
    first = providers[0] if providers else None
    return isinstance(first, tuple) and first[0] == "CUDAExecutionProvider" and \
        str(first[1].get("enable_cuda_graph", "")).lower() in ("1", "true")


def without_cuda_graph(providers: list) -> list:
    name, options = providers[0]
    return [(name, {k: v for k, v in options.items() if k != "enable_cuda_graph"}),
            *providers[1:]]


def cuda_provider_options(cuda_graph: bool) -> dict:
    """The CUDA provider's options, named as onnxruntime's own SD demo passes them
    (``io_binding_helper.CudaSession.get_cuda_provider_options``)."""
    options: dict[str, Any] = {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
    if cuda_graph:
        options["enable_cuda_graph"] = True
    return options


def _session_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initializers are not the user's problem
    set_onnxruntime_threads(opts)
    return opts


class OnnxRuntimeModule(OptimizedModule):
    """An ONNX Runtime session behind the UNet's call. On CUDA, inputs and the output stay on the
    GPU (IO binding: no host copies between denoising steps)."""

    def __init__(self, model_dir: Path, variant: Variant, providers: list, build_info: dict,
                 device_kind: str):
        super().__init__()
        import onnxruntime as ort

        self.variant = variant
        self.model_dir = Path(model_dir)
        self.build_info = dict(build_info)
        self.device_kind = device_kind
        try:
            self._session = self._create(ort, providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own error types
            if not cuda_graph_enabled(providers):
                raise
            # ONNX Runtime refuses a CUDA graph when a compute node is not on the CUDA provider;
            # the fusions still pay without it.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            providers = without_cuda_graph(providers)
            self._session = self._create(ort, providers)
            self.build_info["cuda_graph"] = {"enabled": False, "reason": first[:300]}
        else:
            if cuda_graph_enabled(providers):
                self.build_info["cuda_graph"] = {"enabled": True}
        self.providers = providers
        self._cuda_graph = cuda_graph_enabled(providers)
        self._bound = None  # with a CUDA graph: (binding, input buffers, output buffer)
        asked = _provider_name(providers[0])
        running = self._session.get_providers()
        if not running or running[0] != asked:
            # A provider that is not in this build is dropped with only a warning.
            raise SdoptError(f"{variant.id} asked ONNX Runtime for {asked}, but the session "
                             f"runs on {', '.join(running) or 'nothing'} (this onnxruntime has "
                             f"{', '.join(ort.get_available_providers())}): {asked} could not "
                             "be initialised here, see ONNX Runtime's log above")
        self._inputs = [(i.name, list(i.shape), _NP_TYPES.get(i.type, "float32"))
                        for i in self._session.get_inputs()]
        out = self._session.get_outputs()[0]
        self._output = (out.name, list(out.shape), _NP_TYPES.get(out.type, "float32"))

    def _create(self, ort, providers):
        # enable_fallback=0: by default a provider that fails to initialise (TensorRT missing or
        # of another major) makes ONNX Runtime retry silently on CUDA, and the row labelled
        # tensorrt-fp16 would time the CUDA provider. The keyword is read by InferenceSession's
        # constructor (onnxruntime_inference_collection.py); it also stops run() falling back.
        return ort.InferenceSession(str(_onnx_path(self.model_dir)), _session_options(),
                                    providers=providers, enable_fallback=0)

    def _feeds(self, sample, timestep, encoder_hidden_states, extra) -> list:
        """The session's inputs, by name, from this call (an exporter may drop an input the
        graph does not use: it is not fed)."""
        from .export import named_args

        given = named_args(UNetInputs(sample, timestep, encoder_hidden_states, extra))
        missing = [name for name, _, _ in self._inputs if name not in given]
        if missing:
            raise NotImplementedError(f"{self.variant.id} was exported for the inputs "
                                      f"{[n for n, _, _ in self._inputs]}; this call lacks "
                                      f"{missing}")
        feeds = []
        for name, shape, dtype in self._inputs:
            tensor = given[name]
            static = all(isinstance(d, int) for d in shape)
            if static and list(tensor.shape) != shape:
                raise SdoptError(f"{self.variant.id} was exported for {name} of shape {shape}, "
                                 f"got {list(tensor.shape)}: optimize again at this height, "
                                 "width and batch")
            feeds.append((name, dtype, tensor))
        return feeds

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        feeds = self._feeds(sample, timestep, encoder_hidden_states, extra)
        if self.device_kind == "cuda":
            out = self._run_cuda(feeds, sample)
        else:
            arrays = {name: t.detach().cpu().numpy().astype(dtype, copy=False)
                      if t.is_floating_point() else t.detach().cpu().numpy()
                      for name, dtype, t in feeds}
            out = torch.from_numpy(self._session.run([self._output[0]], arrays)[0])
        return out.to(device=sample.device, dtype=sample.dtype)

    def _run_cuda(self, feeds, sample) -> torch.Tensor:
        device = sample.device if sample.device.type == "cuda" else torch.device("cuda", 0)
        return self._run_bound(feeds, list(sample.shape), device)

    def _run_bound(self, feeds, sample_shape: list[int], device: torch.device) -> torch.Tensor:
        """Run on tensors bound by address (IO binding: nothing goes through the host). Without
        a CUDA graph, this call's tensors are bound; with one, buffers are allocated and bound on
        the first call and every call copies its inputs into them (a replayed graph reads and
        writes the addresses it captured), and the output is cloned (the next call overwrites
        the buffer)."""
        if not self._cuda_graph:
            binding, _keep, out = self._bind(feeds, sample_shape, device, copy=False)
        else:
            if self._bound is None:
                self._bound = self._bind(feeds, sample_shape, device, copy=True)
            binding, buffers, out = self._bound
            for name, _, tensor in feeds:
                buffer = buffers[name]
                if tuple(tensor.shape) != tuple(buffer.shape):
                    raise SdoptError(f"{self.variant.id} runs a CUDA graph captured for {name} "
                                     f"of shape {list(buffer.shape)}, got {list(tensor.shape)}")
                buffer.copy_(tensor)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # torch's writes are done
        self._session.run_with_iobinding(binding)
        return out.clone() if self._cuda_graph else out

    def _bind(self, feeds, sample_shape: list[int], device: torch.device, copy: bool):
        """An IO binding of the session's inputs (this call's tensors, or fresh buffers holding
        a copy of them) and of an output buffer in the graph's output shape and dtype."""
        import numpy as np

        binding = self._session.io_binding()
        device_id = device.index or 0
        bound = {}
        for name, dtype, tensor in feeds:
            target = _TORCH_TYPES[dtype] if tensor.is_floating_point() else tensor.dtype
            if copy:
                t = torch.empty(tuple(tensor.shape), dtype=target, device=device)
                t.copy_(tensor)
            else:
                t = tensor.to(device=device, dtype=target).contiguous()
            bound[name] = t
            binding.bind_input(name, device.type, device_id,
                               np.dtype(str(t.dtype).replace("torch.", "")), list(t.shape),
                               t.data_ptr())
        name, shape, dtype = self._output
        out = torch.empty(tuple(output_shape(shape, sample_shape)), dtype=_TORCH_TYPES[dtype],
                          device=device)
        binding.bind_output(name, device.type, device_id, np.dtype(dtype), list(out.shape),
                            out.data_ptr())
        return binding, bound, out

    def size_bytes(self) -> int:
        from ..store import directory_size

        return directory_size(self.model_dir)


# Exports and quantizations this process really ran (cache hits do not count): lets tests
# assert a cache hit instead of guessing from timings.
CONVERSIONS = {"onnx_export": 0, "quantize_dynamic": 0, "quantize_static": 0, "float16": 0,
               "sd_optimizer": 0}


def onnx_export_entry(unet: torch.nn.Module, ctx: BuildContext):
    """The cache entry holding the fp32 ONNX export of this UNet at the run's shapes."""
    from ..cache import fetch_or_build
    from ..device import library_versions
    from .export import OPSET, checked_export, export_unet

    versions = library_versions()

    def build(tmp: Path) -> dict:
        info = export_unet(unet, ctx.example, tmp)
        CONVERSIONS["onnx_export"] += 1
        return info

    parts = {**_unet_parts(unet, ctx), "opset": OPSET,
             "libraries": {k: versions.get(k) for k in ("torch", "diffusers", "onnx")},
             "onnxscript": deps.version("onnxscript"), "precision": "fp32"}
    return fetch_or_build("onnx-unet", parts, build, root=ctx.cache_dir, valid=checked_export)


def onnx_fp16_entry(unet: torch.nn.Module, ctx: BuildContext):
    """The cache entry holding the fp16 conversion of the fp32 export: what the CUDA provider
    runs and what the TensorRT paths build from (TensorRT 11 takes the precision from the
    graph; the fp32 export of an SD 1.5 UNet is 3.4 GB)."""
    from ..cache import fetch_or_build, made_after

    source = onnx_export_entry(unet, ctx)
    entry = fetch_or_build("onnx-unet-fp16", {
        "source": source.key, "onnxruntime": deps.version("onnxruntime")},
        lambda tmp: _to_float16(source.path, tmp), root=ctx.cache_dir,
        valid=made_after(source))
    return entry


def sd_fusion_options(cuda: bool = True):
    """ONNX Runtime's fusion options for a Stable Diffusion UNet (``FusionOptions("unet")``, its
    demo's choice for fp16 on CUDA); ``cuda=False`` keeps only fusions whose ops the CPU
    provider runs (attention unpacked, LayerNormalization, SkipLayerNormalization, Gelu)."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("unet")
    if not cuda:
        for name in (*CUDA_ONLY_FUSIONS, *CUDA_ONLY_PACKING):
            setattr(options, name, False)
    return options


def _fusion_flags(options) -> dict[str, bool]:
    return {k: v for k, v in sorted(vars(options).items()) if isinstance(v, bool)}


def onnx_sd_export_entry(unet: torch.nn.Module, ctx: BuildContext):
    """The fp32 export ONNX Runtime's SD optimizer is given: the TorchScript exporter first and
    diffusers' classic attention processor (what the demo exports; its fusions do not match the
    dynamo exporter's GroupNorm and SDPA), the dynamo exporter where the TorchScript one fails."""
    from ..cache import fetch_or_build
    from ..device import library_versions
    from .export import OPSET, checked_export, classic_attention, export_unet

    versions = library_versions()

    def build(tmp: Path) -> dict:
        with classic_attention(unet) as replaced:
            info = export_unet(unet, ctx.example, tmp, exporters=SD_EXPORTERS)
        CONVERSIONS["onnx_export"] += 1
        return {**info, "classic_attention_layers": replaced}

    parts = {**_unet_parts(unet, ctx), "opset": OPSET, "exporters": list(SD_EXPORTERS),
             "attention": "AttnProcessor",
             "libraries": {k: versions.get(k) for k in ("torch", "diffusers", "onnx")},
             "onnxscript": deps.version("onnxscript"), "precision": "fp32"}
    return fetch_or_build("onnx-unet-sd", parts, build, root=ctx.cache_dir,
                          valid=checked_export)


def onnx_ort_cuda_entry(unet: torch.nn.Module, ctx: BuildContext):
    """The graph the CUDA provider runs: the SD export fused by ONNX Runtime's optimizer for
    CUDA, then fp16 (inputs and outputs too, as the demo). Returns the export's cache entry and
    the optimized graph's."""
    from ..cache import fetch_or_build, made_after

    source = onnx_sd_export_entry(unet, ctx)
    options = sd_fusion_options(cuda=True)
    return source, fetch_or_build("onnx-unet-ort-cuda", {
        "source": source.key, "fusions": _fusion_flags(options), "float16": True,
        "keep_io_types": False, "onnxruntime": deps.version("onnxruntime")},
        lambda tmp: optimize_sd_unet(source.path, tmp, options, float16=True),
        root=ctx.cache_dir, valid=made_after(source))


def optimize_sd_unet(source: Path, directory: Path, options, *, float16: bool) -> dict:
    """Run ONNX Runtime's Stable Diffusion optimizer on ``source``'s model (the python fusions
    only, ``opt_level=0``, as the demo: an ORT-optimized graph would be tied to the machine's
    provider), convert to fp16 when asked, and save to ``directory`` with external data. Returns
    the fused operators' counts (``get_fused_operator_statistics``) and what ran."""
    from onnxruntime.transformers.optimizer import optimize_model

    from .export import ONNX_FILE

    printed = io.StringIO()  # it prints notes (a failed symbolic shape inference) to stdout
    with quiet_root_logger(), contextlib.redirect_stdout(printed):
        model = optimize_model(str(_onnx_path(source)), model_type="unet", num_heads=0,
                               hidden_size=0, optimization_options=options, opt_level=0,
                               use_gpu=True)
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items()}
        if float16:
            model.convert_float_to_float16(keep_io_types=False)
        model.save_model_to_file(str(directory / ONNX_FILE), use_external_data_format=True,
                                 all_tensors_to_one_file=True)
    CONVERSIONS["sd_optimizer"] += 1
    notes = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    return {"optimizer": "onnxruntime.transformers.optimizer", "model_type": "unet",
            "fusions": _fusion_flags(options), "fused": fused,
            "precision": "fp16" if float16 else "fp32", "notes": notes[:5]}


def _unet_parts(unet, ctx: BuildContext) -> dict:
    from .export import unet_key_parts

    return unet_key_parts(unet, ctx.example)


def saturation_reason(build_info: dict[str, Any], device: DeviceInfo) -> str | None:
    """Why a saved int8 graph (dynamic or static) computes worse here than where it was judged:
    8-bit weights (no ``reduce_range``) on a CPU whose u8 x s8 sums saturate; None when not.
    Graphs cached before weight_bits was recorded were all 8-bit."""
    int8 = build_info.get("int8")
    if not int8:
        return None
    return device.int8_saturation_reason(int(int8.get("weight_bits", 8)))


def _quantize_int8(source: Path, directory: Path, reduce_range: bool = False) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .export import ONNX_FILE
    from ..store import directory_size

    large = directory_size(source) > 1.8 * 2**30
    with quiet_root_logger():  # its "consider pre-processing" note is about static int8
        quantize_dynamic(model_input=str(_onnx_path(source)),
                         model_output=str(directory / ONNX_FILE),
                         op_types_to_quantize=list(INT8_OPS), weight_type=QuantType.QInt8,
                         per_channel=False, reduce_range=reduce_range,
                         use_external_data_format=large)
    CONVERSIONS["quantize_dynamic"] += 1
    return {"quantizer": "onnxruntime.quantization.quantize_dynamic", "ops": list(INT8_OPS),
            "weight_type": "QInt8", "external_data": large, "weight_bits": 7 if reduce_range else 8}


def _quantize_static(source: Path, calibration: list[UNetInputs], directory: Path,
                     keep_dit_edges: bool = False, reduce_range: bool = False) -> dict:
    """``keep_dit_edges``: a DiT's patch embedding and final projection stay in float, as
    OpenVINO's int8-inner keeps them (tiny presets' worst drop: PixArt 1.09 -> 0.62, SD3
    0.014 -> 0.003)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from .export import ONNX_FILE, dit_edge_nodes, named_args
    from ..store import directory_size

    graph = onnx.load(str(_onnx_path(source)), load_external_data=False).graph
    excluded = dit_edge_nodes(graph, STATIC_INT8_OPS) if keep_dit_edges else []
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    items = [{n: t.numpy() for n, t in named_args(c).items() if n in names}
             for c in calibration[:STATIC_SUBSET_MAX]]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(items)

        def get_next(self):
            return next(self._it, None)

    large = directory_size(source) > 1.8 * 2**30
    with quiet_root_logger():
        quantize_static(model_input=str(_onnx_path(source)),
                        model_output=str(directory / ONNX_FILE), calibration_data_reader=Reader(),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(STATIC_INT8_OPS),
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        reduce_range=reduce_range, nodes_to_exclude=excluded,
                        use_external_data_format=large)
    CONVERSIONS["quantize_static"] += 1
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "ops": list(STATIC_INT8_OPS), "activations": "QUInt8", "weights": "QInt8 per channel",
            "calibration": "MinMax", "samples": len(items), "external_data": large,
            "weight_bits": 7 if reduce_range else 8,
            **({"float_nodes": excluded} if keep_dit_edges else {})}


def _to_float16(source: Path, directory: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from .export import ONNX_FILE

    model = onnx.load(str(_onnx_path(source)), load_external_data=True)
    # fp32 inputs/outputs keep the module's interface; the casts are fused by ORT.
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save_model(model, str(directory / ONNX_FILE), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=ONNX_FILE + ".data",
                    size_threshold=1024)
    CONVERSIONS["float16"] += 1
    return {"converter": "onnxruntime.transformers.float16", "keep_io_types": True}


# CPU memory a build adds at its peak, in copies of the fp32 weights (Backend.memory_copies).
MEMORY_COPIES = {"fp32": 1.5, "int8-dynamic": 3.5, "int8-static": 4.9}


@register
class OnnxRuntime(Backend):
    name = "onnxruntime"
    aliases = ("ort", "onnx_runtime", "onnxruntime_cpu")

    def memory_copies(self, variant: Variant, ctx: BuildContext | None = None) -> float | None:
        # The session's weights beside the pipeline's, and for int8 the quantizer's copies of
        # the fp32 graph (static: its calibration's augmented model too): anonymous peaks 1.42,
        # 3.41 and 4.80 copies (benchmarks/candidate_memory.py, tiny UNet widened to 800 MB,
        # 2026-12-01). The CUDA providers' memory is on the device: not counted here.
        return MEMORY_COPIES.get(variant.name)

    def build_activity(self, variant: Variant) -> str:
        if variant.name == "int8-static":
            return "exporting to ONNX and calibrating int8"
        if variant.name == "int8-dynamic":
            return "exporting to ONNX and quantizing int8"
        if variant.name == "tensorrt-fp16":
            return "exporting to ONNX and building the TensorRT engine"
        if variant.name == "cuda-fp16" and variant.options.get("sd_fusions"):
            return "exporting to ONNX and fusing it (ONNX Runtime's SD optimizer)"
        return "exporting to ONNX"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        return [
            Variant(self.name, "fp32", "fp32", options={"provider": "CPUExecutionProvider"},
                    lossless=True, techniques=("onnxruntime", "full graph optimization")),
            Variant(self.name, "int8-dynamic", "int8",
                    options={"provider": "CPUExecutionProvider", "ops": list(INT8_OPS)},
                    techniques=("onnxruntime", "int8 dynamic (MatMul/Gemm)")),
            Variant(self.name, "int8-static", "int8",
                    options={"provider": "CPUExecutionProvider", "ops": list(STATIC_INT8_OPS)},
                    techniques=("onnxruntime", "int8 static QDQ (Conv/MatMul, calibrated)")),
            Variant(self.name, "cuda-fp16", "fp16",
                    options={"provider": "CUDAExecutionProvider", "sd_fusions": True,
                             "cuda_graph": True},
                    techniques=("onnxruntime", "CUDA EP", "SD graph fusions", "fp16",
                                "IO binding", "CUDA graphs")),
            Variant(self.name, "tensorrt-fp16", "fp16",
                    options={"provider": "TensorrtExecutionProvider"},
                    techniques=("onnxruntime", "TensorRT EP", "fp16", "engine cache")),
        ]

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        provider = variant.options.get("provider", "CPUExecutionProvider")
        if provider == "CPUExecutionProvider" and device.kind != "cpu":
            return f"runs on ONNX Runtime's CPU provider; the device is {device.kind}"
        if provider != "CPUExecutionProvider" and device.kind != "cuda":
            return (f"{provider} needs a CUDA GPU; the device is {device.kind} ({device.name}). "
                    "On a GPU machine: pip install 'sdopt[gpu]'")
        extra = "cpu" if device.kind == "cpu" else "gpu"
        for module, why in (("onnxruntime", "ONNX Runtime"), ("onnx", "ONNX export"),
                            ("onnxscript", "the dynamo ONNX exporter")):
            reason = deps.unavailable_reason(module, why, extra=extra)
            if reason:
                return reason
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            ort_version = deps.version("onnxruntime")
            return (f"this onnxruntime build ({ort_version}) has no {provider} (it has "
                    f"{', '.join(available)}): install onnxruntime-gpu"
                    + (" and TensorRT" if "Tensorrt" in provider else ""))
        if provider == "TensorrtExecutionProvider":
            return tensorrt_provider_conflict(Path(ort.__file__).parent / "capi",
                                              tensorrt_version(),
                                              deps.version("onnxruntime"))
        return None

    def _providers(self, variant: Variant, ctx_device: DeviceInfo, onnx_key: str,
                   cache_dir) -> list:
        provider = variant.options.get("provider", "CPUExecutionProvider")
        if provider == "CPUExecutionProvider":
            return ["CPUExecutionProvider"]
        if provider == "CUDAExecutionProvider":
            return [("CUDAExecutionProvider",
                     cuda_provider_options(bool(variant.options.get("cuda_graph")))),
                    "CPUExecutionProvider"]
        from ..cache import persistent_dir

        engines = persistent_dir("ort-tensorrt", {
            "onnx": onnx_key, "gpu": ctx_device.name, "capability": ctx_device.cuda_capability,
            "onnxruntime": deps.version("onnxruntime"), "tensorrt": tensorrt_version(),
            "precision": "fp16"}, root=cache_dir)
        return [("TensorrtExecutionProvider", {
                    "device_id": 0, "trt_fp16_enable": True,
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(engines)}),
                ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        from ..cache import fetch_or_build, made_after

        if variant.name == "cuda-fp16" and variant.options.get("sd_fusions"):
            try:
                source, entry = onnx_ort_cuda_entry(unet, ctx)
            except Exception as exc:  # noqa: BLE001 - a graph the optimizer cannot handle
                # (a family whose patterns its UNet fusions do not cover): fp16 without them.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                reason = f"{type(exc).__name__}: {first[:300]}"
                log.warning("sdopt: %s: ONNX Runtime's SD optimizer failed (%s); running the "
                            "plain fp16 graph", variant.id, reason)
            else:
                info = {"onnx": {"hit": source.hit, "key": source.key, **source.built},
                        "sd_fusions": {"applied": True, "hit": entry.hit, "key": entry.key,
                                       **entry.built}}
                providers = self._providers(variant, ctx.device, entry.key, ctx.cache_dir)
                return OnnxRuntimeModule(entry.path, variant, providers, info, ctx.device.kind)
        else:
            reason = None
        entry = onnx_export_entry(unet, ctx)
        if ctx.device.kind == "cpu":
            # Every CPU variant (and the static calibration) runs this graph's float attention.
            from .onnx_memory import check_activations_fit

            check_activations_fit(_onnx_path(entry.path), variant.id)
        info = {"onnx": {"hit": entry.hit, "key": entry.key, **entry.built}}
        if reason:
            info["sd_fusions"] = {"applied": False, "reason": reason}
        # 7-bit weights where int8 products saturate (DeviceInfo.int8_weight_bits); the key
        # says so only then, so that graphs cached before stay valid.
        reduce_range = ctx.device.int8_weight_bits() == 7
        narrow = {"reduce_range": True} if reduce_range else {}
        if variant.name == "int8-dynamic":
            source = entry
            entry = fetch_or_build("onnxruntime-int8", {
                "source": source.key, "ops": list(INT8_OPS), "weight_type": "QInt8",
                "onnxruntime": deps.version("onnxruntime"), **narrow},
                lambda tmp: _quantize_int8(source.path, tmp, reduce_range), root=ctx.cache_dir,
                valid=made_after(source))
            info["int8"] = {"hit": entry.hit, "key": entry.key, **entry.built}
        elif variant.name == "int8-static":
            if not ctx.calibration:
                raise SdoptError(f"{variant.id} needs calibration inputs (UNet calls recorded "
                                 "from the pipeline): use optimize_model, which collects them")
            from .export import calibration_hash, is_transformer

            source = entry
            edges = is_transformer(unet)
            entry = fetch_or_build("onnxruntime-int8-static", {
                "source": source.key, "ops": list(STATIC_INT8_OPS), "format": "QDQ",
                "calibration": calibration_hash(ctx.calibration[:STATIC_SUBSET_MAX]),
                "onnxruntime": deps.version("onnxruntime"), **narrow,
                **({"float": "dit_edges"} if edges else {})},  # UNet keys unchanged
                lambda tmp: _quantize_static(source.path, ctx.calibration, tmp, edges,
                                             reduce_range),
                root=ctx.cache_dir, valid=made_after(source))
            info["int8"] = {"hit": entry.hit, "key": entry.key, **entry.built}
        elif variant.name in ("cuda-fp16", "tensorrt-fp16"):
            # The TensorRT provider: the plain fp16 conversion (TensorRT has no kernels for ONNX
            # Runtime's contrib ops; the fp32 export of an SD 1.5 UNet is over protobuf's 2 GB,
            # and the fp16 graph is what the engine should run).
            entry = onnx_fp16_entry(unet, ctx)
            info["fp16"] = {"hit": entry.hit, "key": entry.key, **entry.built}
        providers = self._providers(variant, ctx.device, entry.key, ctx.cache_dir)
        return OnnxRuntimeModule(entry.path, variant, providers, info, ctx.device.kind)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        from .export import ONNX_FILE, copy_artifact

        assert isinstance(module, OnnxRuntimeModule)
        copy_artifact(module.model_dir, directory)
        return {"onnx": ONNX_FILE, "build": module.build_info}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        path = _onnx_path(directory)
        if not path.is_file():
            raise SdoptError(f"'{path}' is missing: the saved model is incomplete")
        key = str(info.get("build", {}).get("onnx", {}).get("key", "saved"))
        why = saturation_reason(info.get("build", {}), device)
        if why:
            log.warning("sdopt: %s: %s", variant.id, why)
        providers = self._providers(variant, device, key, None)
        try:
            return OnnxRuntimeModule(directory, variant, providers, dict(info.get("build", {})),
                                     device.kind)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own error types
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SdoptError(f"'{path}' cannot be loaded by ONNX Runtime: {first[:200]}") from exc
