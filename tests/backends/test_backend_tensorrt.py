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


# --- The engine path, run against a fake that follows the real TensorRT 11 API -----------------
# (tests/backends/fake_tensorrt.py; test_tensorrt_api.py checks the fake against the bindings
# wheel). The ONNX export and its fp16 conversion are real; only TensorRT itself is stood in for.

import json  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from . import fake_tensorrt  # noqa: E402


@pytest.fixture
def trt(monkeypatch):
    pytest.importorskip("onnxruntime", reason="the fp16 ONNX conversion needs onnxruntime")
    pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    fake_tensorrt.Builder._builds.clear()
    return fake_tensorrt


@pytest.fixture(scope="module")
def inpainting_unet():
    """An SD-inpainting-shaped UNet: 9 channels in (latent, mask, masked image), 4 out."""
    from diffusers import UNet2DConditionModel

    from sdopt.backends.base import UNetInputs
    from sdopt.models import PRESETS

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**PRESETS["inpaint-tiny"].unet).eval()
    assert (unet.config.in_channels, unet.config.out_channels) == (9, 4)
    inputs = UNetInputs(torch.randn(2, 9, 8, 8), torch.tensor(999),
                        torch.randn(2, 77, unet.config.cross_attention_dim))
    return unet, inputs


def _build(unet, inputs, tmp_path, capability="9.0"):
    from sdopt.backends.base import BuildContext

    gpu = replace(detect("cpu"), kind="cuda", name="NVIDIA H200", cuda_capability=capability)
    backend = get_backend("tensorrt")
    [variant] = backend.variants(gpu)
    ctx = BuildContext(device=gpu, example=inputs, cache_dir=tmp_path / "cache")
    with torch.inference_mode():
        return backend, variant, gpu, backend.build(unet, variant, ctx)


def _given(inputs):
    from sdopt.backends.export import named_args

    return named_args(inputs)


@pytest.mark.slow
def test_engine_is_strongly_typed_from_the_fp16_export(trt, inpainting_unet, tmp_path):
    import onnx

    unet, inputs = inpainting_unet
    _, _, _, module = _build(unet, inputs, tmp_path)
    [build] = trt.Builder._builds
    assert build["flags"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build["builder_flags"] == []  # no precision flags: TensorRT 11 has none
    assert module.build_info["engine"]["strongly_typed"] is True
    # The engine was parsed from the fp16 graph (weights in fp16, interface kept fp32).
    models = [onnx.load(str(p), load_external_data=False)
              for p in (tmp_path / "cache").rglob("model.onnx")]
    assert sorted({i.data_type for i in m.graph.initializer if len(i.dims) > 1} == {
        onnx.TensorProto.FLOAT16} for m in models) == [False, True]  # the fp32 export, the fp16


@pytest.mark.slow
def test_outputs_take_the_engines_shape_and_dtype(trt, inpainting_unet, tmp_path):
    """Inpainting: 9 channels in, 4 out; the buffer is the engine's output, not the sample's."""
    unet, inputs = inpainting_unet
    _, _, _, module = _build(unet, inputs, tmp_path)
    outputs, keep = module._bind(_given(inputs), torch.device("cpu"))
    assert outputs[0].shape == (2, 4, 8, 8) and outputs[0].dtype == torch.float32
    assert [t.data_ptr() for t in keep] == [module._context._addresses[n] for n in module._inputs]
    assert module._context.execute_async_v3(0)
    assert torch.all(outputs[0] == trt.FILL)


def test_inputs_are_bound_by_name_in_the_engines_dtypes(trt, tmp_path):
    """A strongly typed engine with fp16 inputs gets fp16 tensors, whatever order and dtype the
    call passes them in."""
    from sdopt.backends.base import Variant
    from sdopt.backends.tensorrt import ENGINE_FILE, TensorRTModule

    half, floating = int(trt.DataType.HALF), int(trt.DataType.FLOAT)
    io = [{"name": "encoder_hidden_states", "mode": 1, "shape": [2, 77, 32], "dtype": half},
          {"name": "sample", "mode": 1, "shape": [2, 9, 8, 8], "dtype": half},
          {"name": "timestep", "mode": 1, "shape": [2], "dtype": floating},
          {"name": "out_sample", "mode": 2, "shape": [2, 4, 8, 8], "dtype": half}]
    (tmp_path / ENGINE_FILE).write_text(json.dumps({"fake_tensorrt_plan": io}))
    module = TensorRTModule(tmp_path, Variant("tensorrt", "fp16", "fp16"), {})
    given = {"sample": torch.randn(2, 9, 8, 8), "timestep": torch.full((2,), 999.0),
             "encoder_hidden_states": torch.randn(2, 77, 32)}
    outputs, keep = module._bind(given, torch.device("cpu"))
    assert [t.dtype for t in keep] == [torch.float16, torch.float16, torch.float32]
    assert [tuple(t.shape) for t in keep] == [(2, 77, 32), (2, 9, 8, 8), (2,)]
    assert outputs[0].dtype == torch.float16 and outputs[0].shape == (2, 4, 8, 8)
    with pytest.raises(Exception, match="built for sample of shape"):
        module._bind({**given, "sample": torch.randn(2, 9, 16, 16)}, torch.device("cpu"))


@pytest.mark.slow
def test_engine_key_has_the_tensorrt_version_and_compute_capability(trt, inpainting_unet,
                                                                     tmp_path):
    unet, inputs = inpainting_unet
    _, _, _, hopper = _build(unet, inputs, tmp_path, capability="9.0")
    _, _, _, again = _build(unet, inputs, tmp_path, capability="9.0")
    _, _, _, ampere = _build(unet, inputs, tmp_path, capability="8.0")
    lock = hopper.build_info["lock"]
    assert lock["tensorrt"] == trt.__version__ and lock["capability"] == "9.0"
    assert again.build_info["engine"]["hit"] and again.build_info["engine"]["key"] == \
        hopper.build_info["engine"]["key"]
    assert ampere.build_info["engine"]["key"] != hopper.build_info["engine"]["key"]
    assert len(trt.Builder._builds) == 2


@pytest.mark.slow
def test_save_and_load_refuse_another_gpu(trt, inpainting_unet, tmp_path):
    from sdopt.errors import SdoptError

    unet, inputs = inpainting_unet
    backend, variant, gpu, module = _build(unet, inputs, tmp_path)
    info = backend.save(module, tmp_path / "saved")
    info = json.loads(json.dumps(info))  # what the manifest stores
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["unet.plan"]
    loaded = backend.load(tmp_path / "saved", unet, variant, info, gpu)
    assert loaded.build_info["engine"]["strongly_typed"] is True
    outputs, _ = loaded._bind(_given(inputs), torch.device("cpu"))
    assert outputs[0].shape == (2, 4, 8, 8)
    assert loaded._context.execute_async_v3(0) and torch.all(outputs[0] == trt.FILL)
    with pytest.raises(SdoptError, match="built for capability '9.0'"):
        backend.load(tmp_path / "saved", unet, variant, info,
                     replace(gpu, cuda_capability="8.9"))
