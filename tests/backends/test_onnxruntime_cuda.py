"""ONNX Runtime's GPU variants on a machine without a GPU: ONNX Runtime's Stable Diffusion graph
optimizer for the CUDA provider, checked by counting its fusions and, for the fused ops the CPU
provider has kernels for, numerically against the torch UNet; and the cuda-fp16 and
tensorrt-fp16 modules built, run (CUDA graphs, IO binding), saved and loaded against a fake
session (``fake_onnxruntime.py``) that follows onnxruntime's InferenceSession/IOBinding API,
which the first test checks against the installed onnxruntime.

The export, the fusions and the fp16 conversion are real; only the GPU session is stood in for.
"""

import inspect
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="the onnxruntime package is not installed")
pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript")

from sdopt.backends import get_backend  # noqa: E402
from sdopt.backends import onnxruntime as ort_backend  # noqa: E402
from sdopt.backends.base import BuildContext  # noqa: E402
from sdopt.device import detect  # noqa: E402
from sdopt.optimize.metrics import resolve_metric  # noqa: E402

from . import fake_onnxruntime as fake  # noqa: E402

ORT_DIR = Path(ort.__file__).parent
# The ops ONNX Runtime's SD optimizer writes for the CUDA provider.
FUSED_FOR_CUDA = ("MultiHeadAttention", "GroupNorm", "SkipGroupNorm", "BiasSplitGelu", "BiasAdd",
                  "NhwcConv", "LayerNormalization", "SkipLayerNormalization")
CUDA_ONLY = tuple(ort_backend.CUDA_ONLY_FUSIONS.values())


def _gpu():
    return replace(detect("cpu"), kind="cuda", name="NVIDIA H200", cuda_capability="9.0")


@pytest.fixture
def fake_ort(monkeypatch):
    """The real onnxruntime module (optimizer, fp16 converter) with the fake's GPU session."""
    monkeypatch.setattr(ort, "InferenceSession", fake.InferenceSession)
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(fake.PROVIDERS))
    monkeypatch.setattr(fake.InferenceSession, "refuse_cuda_graph", False)
    fake.InferenceSession._made.clear()
    return fake


def _build(tiny_pipe, samples, name):
    backend = get_backend("onnxruntime")
    gpu = _gpu()
    variant = next(v for v in backend.variants(gpu) if v.name == name)
    ctx = BuildContext(device=gpu, example=samples.verification[0].inputs)
    with torch.inference_mode():
        return backend, variant, gpu, backend.build(tiny_pipe.unet, variant, ctx)


def _run(module, inputs):
    """One call as forward makes it on a GPU, with host memory standing in for the device."""
    feeds = module._feeds(inputs.sample, inputs.timestep, inputs.encoder_hidden_states,
                          inputs.extra)
    return module._run_bound(feeds, list(inputs.sample.shape), torch.device("cpu"))


def _parameters(function) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


def test_the_fake_follows_onnxruntimes_api():
    """Every method of the fake exists in onnxruntime's Python API with the same parameters;
    the node args have the real attributes; the provider option names the fake accepts (and
    sdopt passes) are those onnxruntime's own SD demo passes."""
    from onnxruntime.capi.onnxruntime_inference_collection import IOBinding

    pairs = [(fake.InferenceSession, ort.InferenceSession), (fake.IOBinding, IOBinding)]
    for fake_class, real_class in pairs:
        for name, member in vars(fake_class).items():
            if not callable(member) or (name.startswith("_") and name != "__init__"):
                continue
            real = getattr(real_class, name, None)
            assert real is not None, f"{real_class.__name__} has no {name}"
            if name == "__init__" and fake_class is fake.IOBinding:
                assert _parameters(real) == ["session"]
                continue
            assert _parameters(member) == _parameters(real), (real_class.__name__, name)
    for provider in fake.PROVIDERS:
        assert provider in ort.get_all_providers()
    sources = "\n".join(p.read_text() for p in (ORT_DIR / "transformers").rglob("*.py"))
    for provider, names in fake.PROVIDER_OPTIONS.items():
        for option in names:
            assert f'"{option}"' in sources, f"onnxruntime never names {provider}'s {option}"
    # What sdopt passes is accepted by the fake, so by these names.
    assert set(ort_backend.cuda_provider_options(True)) <= \
        fake.PROVIDER_OPTIONS["CUDAExecutionProvider"]
    from onnxruntime.transformers.io_binding_helper import CudaSession

    assert set(ort_backend.cuda_provider_options(True)) == \
        set(CudaSession.get_cuda_provider_options(0, True))


def test_node_args_have_the_attributes_the_fake_gives(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    real = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    ours = fake.InferenceSession(path, providers=["CUDAExecutionProvider"]).get_inputs()[0]
    for attribute in ("name", "shape", "type"):
        assert getattr(ours, attribute) == getattr(real, attribute)
    assert ort_backend._NP_TYPES[ours.type] == "float16"


@pytest.mark.slow
def test_sd_fusions_on_the_cpu_provider_match_the_torch_unet(tiny_pipe, samples, tmp_path):
    """ONNX Runtime's SD optimizer on the tiny UNet's export, checked two ways.

    The CUDA graph (``FusionOptions("unet")``, fp16) is counted, not run: GroupNorm,
    SkipGroupNorm, BiasSplitGelu, BiasAdd and NhwcConv are contrib ops with CUDA kernels only,
    and packed-QKV MultiHeadAttention too, so onnxruntime's CPU build cannot execute that graph.
    The same optimizer with only the fusions the CPU provider runs (attention unpacked,
    LayerNormalization, SkipLayerNormalization, Gelu) is run on the CPU provider in fp32 and
    compared with the torch UNet's recorded outputs: the attention and layer-norm patterns are
    fused the same way in both graphs."""
    import onnx

    ctx = BuildContext(device=_gpu(), example=samples.verification[0].inputs)
    with torch.inference_mode():
        source, cuda = ort_backend.onnx_ort_cuda_entry(tiny_pipe.unet, ctx)
    assert source.built["exporter"] == "legacy" and source.built["classic_attention_layers"] > 0
    fused = cuda.built["fused"]
    assert all(fused[op] > 0 for op in FUSED_FOR_CUDA), fused
    graph = onnx.load(str(cuda.path / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node if n.domain == "com.microsoft"}
    assert set(CUDA_ONLY) <= ops and "MultiHeadAttention" in ops
    assert {i.data_type for i in graph.initializer if len(i.dims) > 1} == {
        onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT16] * 3

    info = ort_backend.optimize_sd_unet(source.path, tmp_path,
                                        ort_backend.sd_fusion_options(cuda=False), float16=False)
    cpu_fused = info["fused"]
    assert cpu_fused["MultiHeadAttention"] + cpu_fused["Attention"] > 0, cpu_fused
    assert cpu_fused["LayerNormalization"] > 0 and cpu_fused["SkipLayerNormalization"] > 0
    assert all(cpu_fused[op] == 0 for op in CUDA_ONLY), cpu_fused
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    from sdopt.backends.export import named_args

    metric = resolve_metric(None)
    names = [i.name for i in session.get_inputs()]
    drops = []
    for s in samples.verification:
        feeds = {n: t.numpy() for n, t in named_args(s.inputs).items() if n in names}
        out = torch.from_numpy(session.run(None, feeds)[0])
        drops.append(float(metric.fn(s.reference, out)))
    assert max(drops) <= 1e-4, drops
    assert all(type(m.processor).__name__ == "AttnProcessor2_0"
               for m in tiny_pipe.unet.modules() if hasattr(m, "set_processor"))


@pytest.mark.slow
def test_cuda_variant_runs_the_fused_fp16_graph_with_a_cuda_graph(fake_ort, tiny_pipe, samples):
    _, variant, _, module = _build(tiny_pipe, samples, "cuda-fp16")
    assert "SD graph fusions" in variant.techniques and "CUDA graphs" in variant.techniques
    assert module.build_info["sd_fusions"]["applied"] is True
    assert module.build_info["sd_fusions"]["fused"]["GroupNorm"] > 0
    assert module.build_info["cuda_graph"] == {"enabled": True}
    [session] = fake.InferenceSession._made
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert session._enable_fallback is False
    options = session.get_provider_options()["CUDAExecutionProvider"]
    assert options["enable_cuda_graph"] == "True"
    assert ("com.microsoft", "GroupNorm") in session._ops and ("com.microsoft", "NhwcConv") in \
        session._ops, "the session was given the fused graph"

    first, second = samples.verification[0].inputs, samples.verification[1].inputs
    out1 = _run(module, first)
    kept = out1.clone()
    out2 = _run(module, second)
    assert session.runs == 2  # the second run replayed: same binding, same buffers (else raises)
    for out, inputs in ((out1, first), (out2, second)):
        expected = (fake.FILL * inputs.sample.to(torch.float16).float()).to(torch.float16)
        assert out.dtype == torch.float16 and torch.equal(out, expected)
    assert torch.equal(out1, kept), "the second call did not overwrite the first's output"
    _, buffers, _ = module._bound
    assert [b.dtype for b in buffers.values()] == [torch.float16] * 3
    with pytest.raises(Exception, match="CUDA graph captured for sample of shape"):
        module._run_bound([("sample", "float16", torch.zeros(1, 4, 8, 8))], [1, 4, 8, 8],
                          torch.device("cpu"))


@pytest.mark.slow
def test_a_refused_cuda_graph_falls_back_with_the_reason(fake_ort, tiny_pipe, samples):
    fake.InferenceSession.refuse_cuda_graph = True
    _, _, _, module = _build(tiny_pipe, samples, "cuda-fp16")
    assert module.build_info["cuda_graph"] == {"enabled": False,
                                               "reason": fake.CUDA_GRAPH_REFUSED}
    session = module._session
    assert "enable_cuda_graph" not in session.get_provider_options()["CUDAExecutionProvider"]
    inputs = samples.verification[0].inputs
    out = _run(module, inputs)
    assert out.shape == inputs.sample.shape and module._bound is None  # bound per call
    _run(module, samples.verification[1].inputs)
    assert session.runs == 2


@pytest.mark.slow
def test_cuda_variant_save_then_load(fake_ort, tiny_pipe, samples, tmp_path):
    import onnx

    backend, variant, gpu, module = _build(tiny_pipe, samples, "cuda-fp16")
    inputs = samples.verification[2].inputs
    before = _run(module, inputs)
    info = json.loads(json.dumps(backend.save(module, tmp_path / "saved")))  # the manifest's
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()
                  if not p.name.startswith(".")) == ["model.onnx", "model.onnx.data"]
    saved = onnx.load(str(tmp_path / "saved" / "model.onnx"))  # loads its external data
    assert {"GroupNorm", "MultiHeadAttention"} <= {n.op_type for n in saved.graph.node}
    assert info["build"]["sd_fusions"]["applied"] is True
    loaded = backend.load(tmp_path / "saved", tiny_pipe.unet, variant, info, gpu)
    assert loaded.model_dir == tmp_path / "saved"
    assert loaded._session.get_provider_options()["CUDAExecutionProvider"][
        "enable_cuda_graph"] == "True"
    assert torch.equal(_run(loaded, inputs), before)


@pytest.mark.slow
def test_tensorrt_provider_gets_the_plain_fp16_export_and_saves(fake_ort, tiny_pipe, samples,
                                                               tmp_path):
    """TensorRT has no kernels for ONNX Runtime's contrib ops: its provider takes the fp16
    conversion of the export (the fp32 one of SD 1.5 is 3.4 GB, over protobuf's 2 GB), with the
    module's fp32 interface, and runs without a CUDA graph."""
    import onnx

    backend, variant, gpu, module = _build(tiny_pipe, samples, "tensorrt-fp16")
    assert "fp16" in module.build_info and "sd_fusions" not in module.build_info
    graph = onnx.load(str(module.model_dir / "model.onnx"), load_external_data=False).graph
    assert not [n for n in graph.node if n.domain == "com.microsoft"]
    assert {i.data_type for i in graph.initializer if len(i.dims) > 1} == {
        onnx.TensorProto.FLOAT16}
    session = module._session
    assert session.get_providers() == list(fake.PROVIDERS)
    options = session.get_provider_options()["TensorrtExecutionProvider"]
    assert options["trt_fp16_enable"] == "True" and Path(options["trt_engine_cache_path"]).is_dir()
    assert re.search(r"ort-tensorrt", options["trt_engine_cache_path"])
    inputs = samples.verification[0].inputs
    out = _run(module, inputs)
    assert out.dtype == torch.float32 and module._bound is None
    info = json.loads(json.dumps(backend.save(module, tmp_path / "saved")))
    loaded = backend.load(tmp_path / "saved", tiny_pipe.unet, variant, info, gpu)
    assert torch.equal(_run(loaded, inputs), out)
    assert np.allclose(out.numpy(), fake.FILL * inputs.sample.numpy())
