"""Native TensorRT: an engine built from the fp16 ONNX export, cached, locked to its GPU.

TensorRT 11 (the image pins tensorrt-cu13 11.4) builds strongly typed networks only: its
bindings have no ``BuilderFlag.FP16``/``INT8``/``FP8``, so the precision is the ONNX graph's own,
and the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` from the fp16
export (the fp32 export of an SD 1.5 UNet is 3.4 GB and would also build an fp32 engine). The
engine's inputs and outputs are bound by name in the dtypes the engine reports
(``get_tensor_dtype``), never by position in fp32: a strongly typed engine takes what the graph
declares. The calls are checked against the real bindings wheel by
``tests/backends/test_tensorrt_api.py``.

A TensorRT engine (plan) only runs on the GPU model and TensorRT version that built it, so the
cache key and the saved model's artifact record both, and ``load`` refuses a mismatch with the
reason instead of letting TensorRT fail obscurely. The timing cache is kept beside the engines:
it makes rebuilding for another shape on the same GPU much faster. Speedster's headline number
(2.14x, RTX 3090 Ti, SD 1.4) came from this path.

Written for CUDA machines; it imports without tensorrt and without a GPU, and on a CPU the
search lists it as skipped with the reason. int8/fp8 engines need a quantized (QDQ) ONNX model
from NVIDIA's modelopt, which sdopt does not produce yet: only fp16 is offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import deps
from ..device import DeviceInfo
from ..errors import SdoptError
from .base import Backend, BuildContext, OptimizedModule, UNetInputs, Variant, register

ENGINE_FILE = "unet.plan"
TIMING_CACHE = "timing.cache"
WORKSPACE_BYTES = 8 << 30


def _lock_fields(device: DeviceInfo) -> dict[str, Any]:
    import tensorrt as trt

    # trt.__version__, not a distribution's version: the module is the same whether it came
    # from the `tensorrt` metapackage or from tensorrt-cu13 alone.
    return {"gpu": device.name, "capability": device.cuda_capability,
            "tensorrt": trt.__version__, "cuda": device.cuda_version}


def _torch_dtype(trt_dtype) -> torch.dtype:
    import tensorrt as trt

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool,
             trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8}
    if trt_dtype not in table:
        raise SdoptError(f"the TensorRT engine has a tensor of type {trt_dtype}, which sdopt "
                         "cannot bind")
    return table[trt_dtype]


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _build_engine(onnx_dir: Path, directory: Path, timing_dir: Path) -> dict[str, Any]:
    import tensorrt as trt

    from .export import ONNX_FILE

    logger = _logger()
    builder = trt.Builder(logger)
    # Strongly typed: the only mode TensorRT 11 builds; the fp16 export decides the precision.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_dir / ONNX_FILE)):  # reads the external data too
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT cannot parse the ONNX export: " + "; ".join(errors[:3]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    timing_path = timing_dir / TIMING_CACHE
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file()
                                        else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT could not build the engine (see its log above)")
    (directory / ENGINE_FILE).write_bytes(bytes(plan))
    tmp = timing_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    tmp.replace(timing_path)
    CONVERSIONS["engine_build"] += 1
    return {"builder": "tensorrt", "precision": "fp16", "strongly_typed": True,
            "workspace_bytes": WORKSPACE_BYTES}


CONVERSIONS = {"engine_build": 0}


class TensorRTModule(OptimizedModule):
    """A deserialized engine with one execution context; inputs and outputs live on the GPU,
    in the engine's own dtypes and shapes (an inpainting UNet takes 9 channels, returns 4)."""

    def __init__(self, engine_dir: Path, variant: Variant, build_info: dict[str, Any]):
        super().__init__()
        import tensorrt as trt

        self.variant = variant
        self.engine_dir = Path(engine_dir)
        self.build_info = build_info
        self._runtime = trt.Runtime(_logger())
        self._engine = self._runtime.deserialize_cuda_engine(
            (self.engine_dir / ENGINE_FILE).read_bytes())
        if self._engine is None:
            raise SdoptError(f"'{self.engine_dir / ENGINE_FILE}' cannot be deserialized by "
                             f"TensorRT {trt.__version__}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names
                        if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names
                         if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _torch_dtype(self._engine.get_tensor_dtype(n)) for n in names}

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        from .export import named_args

        given = named_args(UNetInputs(sample, timestep, encoder_hidden_states, extra))
        device = sample.device if sample.device.type == "cuda" else torch.device("cuda")
        outputs, _keep = self._bind(given, device)
        stream = torch.cuda.current_stream(device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs[0].to(dtype=sample.dtype, device=sample.device)

    def _bind(self, given: dict[str, torch.Tensor], device: torch.device):
        """Set every input's and output's address by name; returns the output buffers (the
        first is the UNet's prediction) and the converted inputs, which must outlive the run."""
        missing = [name for name in self._inputs if name not in given]
        if missing:
            raise NotImplementedError(f"{self.variant.id} was built for the inputs "
                                      f"{self._inputs}; this call lacks {missing}")
        keep = []
        for name in self._inputs:
            tensor = given[name].to(device=device, dtype=self._dtypes[name]).contiguous()
            expected = tuple(self._engine.get_tensor_shape(name))
            if expected != tuple(tensor.shape):
                raise SdoptError(f"{self.variant.id} was built for {name} of shape "
                                 f"{list(expected)}, got {list(tensor.shape)}: optimize again "
                                 "at this height, width and batch")
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = []
        for name in self._outputs:
            # The context's shape, once the inputs are set: the model's output, not the sample's.
            out = torch.empty(tuple(self._context.get_tensor_shape(name)),
                              dtype=self._dtypes[name], device=device)
            self._context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        return outputs, keep

    def size_bytes(self) -> int:
        return (self.engine_dir / ENGINE_FILE).stat().st_size


@register
class TensorRT(Backend):
    name = "tensorrt"
    aliases = ("trt", "tensor_rt")

    def build_activity(self, variant: Variant) -> str:
        return "exporting to ONNX and building the TensorRT engine"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        return [Variant(self.name, "fp16", "fp16", options={"workspace_gib": WORKSPACE_BYTES >> 30},
                        techniques=("tensorrt", "fp16", "engine cache"))]

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if device.kind != "cuda":
            return (f"TensorRT needs an NVIDIA GPU; the device is {device.kind} ({device.name}). "
                    "On a GPU machine: pip install 'sdopt[gpu]'")
        for module, why in (("tensorrt", "TensorRT"), ("onnx", "ONNX export"),
                            ("onnxscript", "the dynamo ONNX exporter"),
                            ("onnxruntime", "the fp16 ONNX conversion")):
            reason = deps.unavailable_reason(module, why, extra="gpu")
            if reason:
                return reason
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        from ..cache import fetch_or_build, made_after, persistent_dir
        from .onnxruntime import onnx_fp16_entry

        # Export on the CPU copy: the engine is built from the file, the GPU is not needed yet.
        onnx = onnx_fp16_entry(unet, ctx)
        lock = _lock_fields(ctx.device)
        timing_dir = persistent_dir("tensorrt-timing", lock, root=ctx.cache_dir)
        engine = fetch_or_build("tensorrt-engine", {"onnx": onnx.key, **lock, "precision": "fp16",
                                                    "strongly_typed": True,
                                                    "workspace": WORKSPACE_BYTES},
                                lambda tmp: _build_engine(onnx.path, tmp, timing_dir),
                                root=ctx.cache_dir, valid=made_after(onnx))
        info = {"onnx": {"hit": onnx.hit, "key": onnx.key, **onnx.built},
                "engine": {"hit": engine.hit, "key": engine.key, **engine.built},
                "lock": lock}
        return TensorRTModule(engine.path, variant, info)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        from .export import copy_artifact

        assert isinstance(module, TensorRTModule)
        copy_artifact(module.engine_dir, directory, (ENGINE_FILE,))
        return {"engine": ENGINE_FILE, "lock": module.build_info.get("lock", {}),
                "build": module.build_info}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        path = directory / ENGINE_FILE
        if not path.is_file():
            raise SdoptError(f"'{path}' is missing: the saved model is incomplete")
        saved, here = info.get("lock", {}), _lock_fields(device)
        for key in ("gpu", "capability", "tensorrt"):
            if saved.get(key) != here[key]:
                raise SdoptError(f"'{path}' is a TensorRT engine built for {key} "
                                 f"{saved.get(key)!r}, this machine has {here[key]!r}: engines "
                                 "only run where they were built; run optimize_model here")
        return TensorRTModule(directory, variant, dict(info.get("build", {})))
