"""ONNX Runtime backend on the tiny preset: real exports, real sessions."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sdopt.backends import get_backend
from sdopt.backends.base import BuildContext
from sdopt.device import detect
from sdopt.errors import SdoptError
from sdopt.optimize.metrics import resolve_metric

from ..conftest import build_variant, verification_drops

pytest.importorskip("onnxruntime", reason="the onnxruntime package is not installed")

from sdopt.backends import onnxruntime as ort_backend  # noqa: E402

ROUNDTRIP = Path(__file__).parents[1] / "scripts" / "roundtrip.py"
# numeric_precision each variant must stay within: fp32 is the same arithmetic (measured 1e-6 on
# SD 1.5); dynamic int8 of MatMul/Gemm quantizes activations per call.
# Static int8 also quantizes Conv, with ranges fixed at calibration.
TOLERANCE = {"fp32": 1e-4, "int8-dynamic": 0.1, "int8-static": 0.15}


def _build(pipe, name, samples):
    return build_variant(pipe, "onnxruntime", name, samples)


@pytest.mark.parametrize("name", ["fp32", "int8-dynamic", "int8-static"])
def test_output_matches_the_fp32_unet(tiny_pipe, samples, name):
    module = _build(tiny_pipe, name, samples)
    drops = verification_drops(module, samples)
    assert max(drops) <= TOLERANCE[name], drops
    if name.startswith("int8"):  # 7-bit weights (reduce_range) where int8 products saturate
        assert module.build_info["int8"].get("weight_bits", 8) == detect("cpu").int8_weight_bits()
    if name == "int8-dynamic":
        assert max(drops) > 1e-5, "int8 really ran"
        import onnx

        model = onnx.load(str(module.model_dir / "model.onnx"))
        ops = {n.op_type for n in model.graph.node}
        assert "MatMulInteger" in ops and "ConvInteger" not in ops
    if name == "int8-static":
        assert max(drops) > 1e-5, "int8 really ran"
        import onnx

        model = onnx.load(str(module.model_dir / "model.onnx"))
        dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert convs and all(n.input[0] in dequantized and n.input[1] in dequantized
                             for n in convs), "every Conv's input and weight come through QDQ"
        assert module.build_info["int8"]["format"] == "QDQ"
    assert module.build_info["onnx"]["exporter"] in ("dynamo", "legacy")


def test_session_options_do_not_spin(tiny_pipe, samples):
    module = _build(tiny_pipe, "fp32", samples)
    config = module._session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning")
    assert config == "0"


def test_second_build_hits_the_cache(tiny_pipe, samples):
    _build(tiny_pipe, "int8-dynamic", samples)
    before = dict(ort_backend.CONVERSIONS)
    again = _build(tiny_pipe, "int8-dynamic", samples)
    assert ort_backend.CONVERSIONS == before, "no export and no quantization ran again"
    assert again.build_info["onnx"]["hit"] and again.build_info["int8"]["hit"]


def test_static_int8_needs_calibration_and_caches_per_calibration_set(tiny_pipe, samples):
    dev = detect("cpu")
    backend = get_backend("onnxruntime")
    variant = next(v for v in backend.variants(dev) if v.name == "int8-static")
    with pytest.raises(SdoptError, match="needs calibration inputs"):
        backend.build(tiny_pipe.unet, variant,
                      BuildContext(device=dev, example=samples.verification[0].inputs))
    first = _build(tiny_pipe, "int8-static", samples)
    before = dict(ort_backend.CONVERSIONS)
    again = _build(tiny_pipe, "int8-static", samples)
    assert ort_backend.CONVERSIONS == before and again.build_info["int8"]["hit"]
    assert again.build_info["int8"]["key"] == first.build_info["int8"]["key"]


def test_other_shapes_are_refused_with_the_reason(tiny_pipe, samples):
    module = _build(tiny_pipe, "fp32", samples)
    inp = samples.verification[0].inputs
    with pytest.raises(SdoptError, match="exported for sample of shape"):
        module(torch.randn(2, 4, 16, 16), inp.timestep, inp.encoder_hidden_states)


def test_save_then_load_in_a_new_process_gives_the_same_images(tmp_path):
    directory = tmp_path / "saved"
    run = lambda *a: subprocess.run([sys.executable, str(ROUNDTRIP), *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=600,
                                    env=dict(os.environ))
    for step in ("save", "load"):
        proc = run(step, directory, "onnxruntime/fp32")
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = np.load(f"{directory}.first.npy"), np.load(f"{directory}.second.npy")
    assert np.abs(first - second).max() <= 1
    manifest = json.loads((directory / "sdopt_manifest.json").read_text())
    assert manifest["components"]["unet"]["backend"] == "onnxruntime"
    assert (directory / "unet" / "model.onnx").is_file()


def test_gpu_variants_are_listed_and_skipped_on_cpu(tiny_pipe, samples):
    from sdopt.optimize.metrics import resolve_metric
    from sdopt.optimize.search import plan_candidates, run_search

    dev = detect("cpu")
    variants = [v for v in plan_candidates(dev, backends=["onnxruntime", "tensorrt"])
                if "fp16" in v.name or v.id == "torch_eager/fp32"]
    result = run_search(tiny_pipe.unet, samples, dev, variants, metric=resolve_metric(None),
                        metric_drop_ths=0.1, optimization_time="constrained", repeats=1).result
    rows = {c.id: c for c in result.candidates}
    for cid in ("onnxruntime/cuda-fp16", "onnxruntime/tensorrt-fp16", "tensorrt/fp16"):
        assert rows[cid].status == "skipped" and "needs" in rows[cid].reason, rows[cid]
        assert "GPU" in rows[cid].reason


def test_cuda_without_the_provider_names_it():
    gpu = replace(detect("cpu"), kind="cuda", name="NVIDIA H100", cuda_capability="9.0")
    backend = get_backend("onnxruntime")
    rows = {v.name: backend.unavailable_reason(gpu, v) for v in backend.variants(gpu)}
    assert "the device is cuda" in rows["fp32"]
    assert "has no CUDAExecutionProvider" in rows["cuda-fp16"]
    assert "has no TensorrtExecutionProvider" in rows["tensorrt-fp16"]


def test_float16_conversion_for_the_cuda_path(tiny_pipe, samples, tmp_path):
    """The fp16 model the CUDA EP runs is made on any machine: check it is an fp16 graph that
    computes what the fp32 one does (run here by the CPU provider, which has fp16 kernels)."""
    import onnx
    import onnxruntime as ort

    from sdopt.backends.export import unet_args

    entry = ort_backend.onnx_export_entry(
        tiny_pipe.unet, BuildContext(device=detect("cpu"), example=samples.verification[0].inputs))
    ort_backend._to_float16(entry.path, tmp_path)
    model = onnx.load(str(tmp_path / "model.onnx"))
    types = {i.data_type for i in model.graph.initializer if len(i.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    s = samples.verification[0]
    feeds = dict(zip(("sample", "timestep", "encoder_hidden_states"),
                     (t.numpy() for t in unet_args(s.inputs))))
    out = torch.from_numpy(session.run(None, feeds)[0])
    assert 1e-5 < float(resolve_metric(None).fn(s.reference, out)) < 0.01


def test_a_provider_that_did_not_load_fails_the_candidate(tiny_pipe, samples):
    """ONNX Runtime drops a provider it cannot use with a warning and runs on the next one:
    here, a CPU build asked for CUDA. The module refuses, naming both, instead of timing the CPU
    provider under the CUDA row (the same check catches TensorRT falling back to CUDA)."""
    from sdopt.backends.base import Variant

    entry = ort_backend.onnx_export_entry(
        tiny_pipe.unet, BuildContext(device=detect("cpu"), example=samples.verification[0].inputs))
    variant = Variant("onnxruntime", "cuda-fp16", "fp16")
    providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # pragma: no cover - GPU build
        pytest.skip("this onnxruntime has the CUDA provider: nothing falls back here")
    with pytest.raises(SdoptError, match="asked ONNX Runtime for CUDAExecutionProvider, but "
                                         "the session runs on CPUExecutionProvider"), \
            pytest.warns(UserWarning, match="'CUDAExecutionProvider' is not in available"):
        ort_backend.OnnxRuntimeModule(entry.path, variant, providers, {}, "cuda")
    module = ort_backend.OnnxRuntimeModule(entry.path, variant, ["CPUExecutionProvider"], {},
                                           "cpu")
    assert module._session.get_providers()[0] == "CPUExecutionProvider"
    assert module._session._enable_fallback is False  # what enable_fallback=0 sets


def test_a_saved_8_bit_int8_graph_says_why_it_drifts_on_a_cpu_without_vnni(caplog, tmp_path):
    """The load's warning (as OpenVINO's): 8-bit weights, saved elsewhere, on a CPU whose int8
    sums saturate; 7-bit weights, float graphs and VNNI CPUs load silently."""
    import dataclasses
    import logging

    from sdopt.backends.export import ONNX_FILE
    from sdopt.backends.onnxruntime import saturation_reason

    cpu = detect("cpu")
    vnni = dataclasses.replace(cpu, cpu_flags=("avx2", "avx512f", "avx512_vnni"))
    avx2 = dataclasses.replace(cpu, cpu_flags=("avx2",))
    eight, seven = {"int8": {"weight_bits": 8}}, {"int8": {"weight_bits": 7}}
    assert "7-bit" in saturation_reason(eight, avx2)
    assert "7-bit" in saturation_reason({"int8": {"key": "k"}}, avx2)  # cached before the field
    assert saturation_reason(seven, avx2) is None
    assert saturation_reason(eight, vnni) is None
    assert saturation_reason({"onnx": {"key": "k"}}, avx2) is None  # a float graph
    # load warns before it opens the graph (here not a graph: the load then fails, as it should)
    (tmp_path / ONNX_FILE).write_bytes(b"not onnx")
    backend = get_backend("onnxruntime")
    variant = next(v for v in backend.variants(avx2) if v.name == "int8-dynamic")
    with caplog.at_level(logging.WARNING, logger="sdopt.backends.onnxruntime"):
        with pytest.raises(SdoptError, match="cannot be loaded by ONNX Runtime"):
            backend.load(tmp_path, None, variant, {"build": eight}, avx2)
    assert any("no VNNI" in r.getMessage() and variant.id in r.getMessage()
               for r in caplog.records), caplog.records
