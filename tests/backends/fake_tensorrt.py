"""A stand-in for the ``tensorrt`` module where TensorRT cannot run (no GPU, no CUDA libraries).

It follows the real TensorRT 11 bindings: every public class, enum member (with its value),
method, property and parameter name here exists in ``tensorrt-cu13-bindings`` with the same kind
and parameter names, which ``test_tensorrt_api.py`` checks against the wheel itself. So sdopt's
TensorRT code run against this fake can only call what the real API has: TensorRT 11's
``BuilderFlag`` has no ``FP16``, and neither has this one.

What it cannot do is compile: the "plan" it serializes is a JSON list of the network's inputs
and outputs, read from the ONNX file the parser is given (names, static shapes, element types),
and "executing" fills each output buffer with ``FILL``. That is enough to test what sdopt owns:
strongly typed network creation, binding by name, the engine's dtypes and output shapes.
"""

from __future__ import annotations

import ctypes
import enum
import json

import numpy as np

__version__ = "11.4.0.106"
FILL = 0.5


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 0


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    """No FP16/INT8/FP8 members: TensorRT 11 removed them (strongly typed networks only)."""

    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    TF32 = 6


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4


class Logger(ILogger):
    INTERNAL_ERROR = ILogger.Severity.INTERNAL_ERROR
    ERROR = ILogger.Severity.ERROR
    WARNING = ILogger.Severity.WARNING
    INFO = ILogger.Severity.INFO
    VERBOSE = ILogger.Severity.VERBOSE

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        self._min_severity = min_severity


_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 16: DataType.BF16, 6: DataType.INT32,
               7: DataType.INT64, 9: DataType.BOOL, 3: DataType.INT8, 2: DataType.UINT8}
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
          DataType.INT64: np.int64, DataType.BOOL: np.bool_, DataType.INT8: np.int8,
          DataType.UINT8: np.uint8}


class IHostMemory:
    def __init__(self, data: bytes):
        self._data = bytes(data)

    def __bytes__(self) -> bytes:
        return self._data

    @property
    def nbytes(self) -> int:
        return len(self._data)


class INetworkDefinition:
    def __init__(self, flags: int):
        self._flags = flags
        self._io: list[dict] = []


class OnnxParser:
    def __init__(self, network, logger):
        self._network = network
        self._errors: list[str] = []

    def parse_from_file(self, model):
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        for mode, values in ((TensorIOMode.INPUT, [v for v in graph.input
                                                   if v.name not in weights]),
                             (TensorIOMode.OUTPUT, list(graph.output))):
            for value in values:
                t = value.type.tensor_type
                self._network._io.append({
                    "name": value.name, "mode": int(mode),
                    "shape": [d.dim_value for d in t.shape.dim],
                    "dtype": int(_ONNX_TYPES[t.elem_type])})
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index):
        return self._errors[index]


class ITimingCache:
    def __init__(self, data: bytes):
        self._data = data

    def serialize(self):
        return IHostMemory(self._data or b"fake timing cache")


class IBuilderConfig:
    def __init__(self):
        self._pools: dict = {}
        self._flags: list = []
        self._timing = None

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool] = pool_size

    def set_flag(self, flag):
        self._flags.append(flag)

    def create_timing_cache(self, serialized_timing_cache):
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache, ignore_mismatch):
        self._timing = cache
        return True

    def get_timing_cache(self):
        return self._timing


class Builder:
    # Every network this process built, for tests: its creation flags and builder flags.
    _builds: list[dict] = []

    def __init__(self, logger):
        self._logger = logger

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def build_serialized_network(self, network, config):
        Builder._builds.append({"flags": network._flags, "builder_flags": list(config._flags)})
        return IHostMemory(json.dumps({"fake_tensorrt_plan": network._io}).encode())


class Runtime:
    def __init__(self, logger):
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        try:
            io = json.loads(bytes(serialized_engine))["fake_tensorrt_plan"]
        except (ValueError, KeyError, TypeError):
            return None  # what the real runtime returns for a plan it cannot read
        return ICudaEngine(io)


class ICudaEngine:
    def __init__(self, io: list[dict]):
        self._io = {t["name"]: t for t in io}
        self._names = [t["name"] for t in io]

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode(self._io[name]["mode"]) if name in self._io else TensorIOMode.NONE

    def get_tensor_shape(self, name):
        return tuple(self._io[name]["shape"])

    def get_tensor_dtype(self, name):
        return DataType(self._io[name]["dtype"])

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self._engine = engine
        self._addresses: dict[str, int] = {}

    def set_tensor_address(self, name, memory):
        self._addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name):
        return self._engine.get_tensor_shape(name)

    def execute_async_v3(self, stream_handle):
        """Fills each output with FILL at the address bound to it (host memory in tests)."""
        for name in self._engine._names:
            if self._engine.get_tensor_mode(name) != TensorIOMode.OUTPUT:
                continue
            dtype = np.dtype(_NUMPY[self._engine.get_tensor_dtype(name)])
            shape = self._engine.get_tensor_shape(name)
            count = int(np.prod(shape))
            buffer = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(
                self._addresses[name])
            np.frombuffer(buffer, dtype=dtype, count=count)[:] = FILL
        return True


__all__ = ["__version__", "DataType", "TensorIOMode", "NetworkDefinitionCreationFlag",
           "MemoryPoolType", "BuilderFlag", "ILogger", "Logger", "IHostMemory",
           "INetworkDefinition", "OnnxParser", "ITimingCache", "IBuilderConfig", "Builder",
           "Runtime", "ICudaEngine", "IExecutionContext"]
