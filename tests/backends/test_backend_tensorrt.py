"""Native TensorRT: imports and skips cleanly without a GPU (the engine path needs one)."""

import importlib
from dataclasses import replace

from sdopt.backends import get_backend
from sdopt.device import detect


def test_imports_and_skips_on_cpu_with_the_reason():
    module = importlib.import_module("sdopt.backends.tensorrt")
    backend = get_backend("trt")
    assert backend is get_backend("tensorrt") and module.TensorRT.name == "tensorrt"
    cpu = detect("cpu")
    [variant] = backend.variants(cpu)
    reason = backend.unavailable_reason(cpu, variant)
    assert reason.startswith("TensorRT needs an NVIDIA GPU; the device is cpu")


def test_gpu_without_tensorrt_names_the_package():
    gpu = replace(detect("cpu"), kind="cuda", name="NVIDIA H100", cuda_capability="9.0")
    backend = get_backend("tensorrt")
    reason = backend.unavailable_reason(gpu, backend.variants(gpu)[0])
    if importlib.util.find_spec("tensorrt") is None:
        assert "'tensorrt', which is not installed" in reason
    else:  # pragma: no cover - a GPU machine
        assert reason is None
