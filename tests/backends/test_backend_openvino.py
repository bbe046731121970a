"""OpenVINO backend on the tiny preset: real conversions, real compiled models."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends import get_backend
from sdopt.device import detect
from sdopt.errors import SdoptError
from sdopt.optimize.metrics import resolve_metric

from ..conftest import build_variant, verification_drops

pytest.importorskip("openvino", reason="the openvino package is not installed")

from sdopt.backends import openvino as ov_backend  # noqa: E402

ROUNDTRIP = Path(__file__).parents[1] / "scripts" / "roundtrip.py"
# numeric_precision (relative L1 of the noise prediction) each precision must stay within on the
# tiny model; bf16 measured ~0.01 on SD 1.5, int8 ~0.06 here.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.03, "int8": 0.15, "int8-inner": 0.15, "int8-matmul": 0.15,
             "int8-conv": 0.15, "int8-weights": 0.05}


def _build(pipe, name, samples):
    return build_variant(pipe, "openvino", name, samples)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "int8-inner", "int8-matmul",
                                       "int8-conv", "int8-weights"])
def test_output_matches_the_fp32_unet(tiny_pipe, samples, precision):
    module = _build(tiny_pipe, precision, samples)
    drops = verification_drops(module, samples)
    assert max(drops) <= TOLERANCE[precision], drops
    if precision == "bf16" and not detect("cpu").supports_bf16()[0]:
        # OpenVINO's CPU plugin runs the bf16 hint in f32 where the CPU has no bf16 units (a
        # Zen 3 here); the search skips the variant there
        assert max(drops) < 1e-5, "no bf16 units: f32 ran"
    elif precision != "fp32":
        assert max(drops) > 1e-5, "reduced precision really ran"
    assert module.size_bytes() > 0


def test_second_build_hits_the_cache(tiny_pipe, samples, export_cache):
    _build(tiny_pipe, "int8", samples)  # fills both entries if earlier tests did not
    before = dict(ov_backend.CONVERSIONS)
    fp32 = _build(tiny_pipe, "fp32", samples)
    int8 = _build(tiny_pipe, "int8", samples)
    assert ov_backend.CONVERSIONS == before, "no conversion and no quantization ran again"
    assert fp32.build_info["ir"]["hit"] and int8.build_info["int8"]["hit"]
    assert (export_cache / "openvino-ir" / fp32.build_info["ir"]["key"]).is_dir()
    # partial int8 is another artifact, with the other kind of layer left in floating point
    matmul = _build(tiny_pipe, "int8-matmul", samples)
    assert matmul.build_info["int8"]["key"] != int8.build_info["int8"]["key"]
    assert matmul.build_info["int8"]["ignored_types"] == ["Convolution"]
    # other calibration data is another int8 artifact
    other = list(samples.calibration)[:1]
    from sdopt.backends.openvino import calibration_hash

    assert calibration_hash([s.inputs for s in other]) != \
        calibration_hash([s.inputs for s in samples.calibration])


def _quantized_inputs(xml: Path, pattern: str) -> dict[str, list[str]]:
    """For each Convolution whose name matches: the op types feeding its inputs."""
    import re

    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {op.get_friendly_name(): [op.input(i).get_source_output().get_node().get_type_name()
                                     for i in range(op.get_input_size())]
            for op in model.get_ops()
            if op.get_type_name() == "Convolution" and re.fullmatch(pattern, op.get_friendly_name())}


def test_partial_int8_is_derived_from_the_full_int8_model(tiny_pipe, samples, tmp_path):
    """After full int8 (what the search tries first), int8-inner and int8-matmul cost a graph edit,
    not a second calibration; int8-conv (MatMuls out: SmoothQuant) is still calibrated."""
    from sdopt.backends.base import BuildContext

    dev = detect("cpu")
    backend = get_backend("openvino")
    variants = {v.name: v for v in backend.variants(dev)}

    def build(name, cache):
        ctx = BuildContext(device=dev, example=samples.verification[0].inputs,
                           calibration=[s.inputs for s in samples.calibration], cache_dir=cache)
        with torch.inference_mode():
            return backend.build(tiny_pipe.unet, variants[name], ctx)

    calibrated = build("int8-inner", tmp_path / "alone")  # no full int8 there: calibrated
    assert "full_int8_key" not in calibrated.build_info["int8"]
    cache = tmp_path / "after-full"
    full = build("int8", cache)
    before = dict(ov_backend.CONVERSIONS)
    inner = build("int8-inner", cache)
    matmul = build("int8-matmul", cache)
    assert ov_backend.CONVERSIONS["nncf.quantize"] == before["nncf.quantize"]
    assert ov_backend.CONVERSIONS["derived"] == before["derived"] + 2
    info = inner.build_info["int8"]
    assert info["full_int8_key"] == full.build_info["int8"]["key"]
    assert sorted(info["fp_layers"]) == sorted(_quantized_inputs(inner.ir_dir / "unet.xml",
                                                                 ".*conv_(in|out).*"))
    # conv_in/conv_out: quantized inputs in the full model, fp32 weights and no quantizer now
    edges = ".*conv_(in|out)/.*"
    assert all("FakeQuantize" in srcs for srcs in
               _quantized_inputs(full.ir_dir / "unet.xml", edges).values())
    for srcs in _quantized_inputs(inner.ir_dir / "unet.xml", edges).values():
        assert srcs[1] == "Constant" and "FakeQuantize" not in srcs
    assert not any("FakeQuantize" in srcs for srcs in
                   _quantized_inputs(matmul.ir_dir / "unet.xml", ".*").values())
    # and it computes what the calibrated int8-inner computes, within int8 noise
    inp = samples.verification[0].inputs
    with torch.inference_mode():
        outs = {name: m(inp.sample, inp.timestep, inp.encoder_hidden_states)
                for name, m in (("calibrated", calibrated), ("derived", inner), ("full", full))}
    ref = samples.verification[0].reference
    err = {k: float((v - ref).norm() / ref.norm()) for k, v in outs.items()}
    assert err["derived"] <= 1.5 * err["calibrated"] + 1e-3, err
    conv = build("int8-conv", cache)
    assert ov_backend.CONVERSIONS["nncf.quantize"] == before["nncf.quantize"] + 1
    assert "full_int8_key" not in conv.build_info["int8"]


def test_other_shapes_recompile_without_reconversion(tiny_pipe, samples):
    module = _build(tiny_pipe, "fp32", samples)
    before = dict(ov_backend.CONVERSIONS)
    inp = samples.verification[0].inputs
    sample = torch.randn(2, 4, 16, 16)
    with torch.inference_mode():
        out = module(sample, inp.timestep, inp.encoder_hidden_states)
        ref = tiny_pipe.unet(sample, inp.timestep, encoder_hidden_states=inp.encoder_hidden_states,
                             return_dict=False)[0]
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-4)
    assert ov_backend.CONVERSIONS == before


def _run(*args):
    proc = subprocess.run([sys.executable, str(ROUNDTRIP), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_save_then_load_in_a_new_process_gives_the_same_images(tmp_path):
    directory = tmp_path / "saved"
    assert _run("save", directory, "openvino/bf16") == "openvino/bf16"
    assert _run("load", directory, "openvino/bf16") == "openvino/bf16"
    first, second = np.load(f"{directory}.first.npy"), np.load(f"{directory}.second.npy")
    assert first.shape == (64, 64, 3) and np.abs(first - second).max() <= 1
    manifest = json.loads((directory / "sdopt_manifest.json").read_text())
    unet = manifest["components"]["unet"]
    assert unet["backend"] == "openvino" and unet["artifact"]["hint"] == "bf16"
    assert sorted(p.name for p in (directory / "unet").iterdir()) == ["unet.bin", "unet.xml"]


def test_corrupt_ir_is_refused(tiny_pipe, samples, tmp_path, fresh_tiny_pipe):
    optimized = sdopt.apply_variant(tiny_pipe, "openvino/fp32")
    sdopt.save_model(optimized, tmp_path / "m")
    (tmp_path / "m" / "unet" / "unet.xml").write_text("<not a model")
    with pytest.raises(SdoptError, match="unet.xml' is corrupt"):
        sdopt.load_model(tmp_path / "m", pipe=fresh_tiny_pipe)
    (tmp_path / "m" / "unet" / "unet.bin").unlink()
    with pytest.raises(SdoptError, match="unet.bin' is missing"):
        sdopt.load_model(tmp_path / "m", pipe=fresh_tiny_pipe)


def test_int8_needs_calibration(tiny_pipe):
    with pytest.raises(SdoptError, match="needs calibration inputs"):
        sdopt.apply_variant(tiny_pipe, "openvino/int8")


def test_search_lists_openvino_and_picks_within_threshold(tiny_pipe, prompts):
    # exhaustive: every variant is built (the default search may bound some out).
    optimized = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.1,
                                     backends=["openvino"], num_inference_steps=4, repeats=2,
                                     show=False, end_to_end=False, exhaustive=True)
    result = optimized.sdopt_result
    rows = {c.id: c for c in result.candidates}
    for name in ("fp32", "bf16", "int8-minmax"):
        row = rows[f"openvino/{name}"]
        if row.status == "skipped" and detect("cpu").only_slow(row.reason):
            continue  # bf16 on a CPU without bf16 units: skipped for its speed, saying so
        assert row.status in ("ok", "selected", "rejected"), rows
        assert row.latency_s > 0
    # NNCF's int8 rescues a rejected min/max int8 only, exhaustive or not
    nncf = rows["openvino/int8"]
    assert nncf.latency_s > 0 if rows["openvino/int8-minmax"].status == "rejected" \
        else "another calibration of the same int8 layers" in nncf.reason
    selected = result.selected
    assert selected.metric_drop <= 0.1
    # The search's fastest is the pick unless the side-by-side rounds preferred the runner-up.
    fastest = min(c.latency_s for c in rows.values() if c.status in ("ok", "selected"))
    assert selected.latency_s == fastest or any("re-timed side by side" in n
                                                for n in result.notes)


def test_missing_package_gives_a_skipped_row(tiny_pipe, prompts, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    optimized = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.1,
                                     backends=["openvino"], num_inference_steps=4, repeats=1,
                                     show=False, end_to_end=False)
    rows = {c.id: c for c in optimized.sdopt_result.candidates}
    for name in ("fp32", "bf16", "int8"):
        assert rows[f"openvino/{name}"].status == "skipped"
        assert "'openvino', which is not installed" in rows[f"openvino/{name}"].reason


def test_gpu_device_is_refused_with_reason():
    from dataclasses import replace

    gpu = replace(detect("cpu"), kind="cuda", name="NVIDIA H100")
    backend = get_backend("openvino")
    assert "CPU only" in backend.unavailable_reason(gpu, backend.variants(gpu)[0])


def test_int8_inner_keeps_the_ends_in_floating_point_and_errs_less(tiny_pipe, samples):
    metric = resolve_metric(None)

    def mean_drop(module):
        with torch.inference_mode():
            return sum(float(metric.fn(s.reference, module(s.inputs.sample, s.inputs.timestep,
                                                           s.inputs.encoder_hidden_states)))
                       for s in samples.verification) / len(samples.verification)

    full, inner = _build(tiny_pipe, "int8", samples), _build(tiny_pipe, "int8-inner", samples)
    assert inner.build_info["int8"]["ignored_patterns"] == [".*conv_in.*", ".*conv_out.*"]
    assert mean_drop(inner) < mean_drop(full)


def test_int8_weights_are_int8_constants_without_calibration(tiny_pipe, samples, tmp_path):
    """int8-weights compresses every weight of the fp32 IR to int8 (data-free: no calibration
    inputs needed) and leaves the activations to the plugin (no FakeQuantize in the graph);
    a second build is a cache hit; it errs less than the min/max int8 graph."""
    import openvino as ov

    from sdopt.backends.base import BuildContext

    dev = detect("cpu")
    backend = get_backend("openvino")
    variant = next(v for v in backend.variants(dev) if v.name == "int8-weights")
    ctx = BuildContext(device=dev, example=samples.verification[0].inputs, cache_dir=tmp_path)
    with torch.inference_mode():
        module = backend.build(tiny_pipe.unet, variant, ctx)
    assert module.build_info["int8"]["quantizer"] == "nncf.compress_weights"
    model = ov.Core().read_model(str(module.ir_dir / "unet.xml"))
    types = [op.get_type_name() for op in model.get_ops()]
    assert "FakeQuantize" not in types
    int8_constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                      and op.get_element_type() in (ov.Type.u8, ov.Type.i8)]
    assert len(int8_constants) >= 20, len(int8_constants)
    before = dict(ov_backend.CONVERSIONS)
    with torch.inference_mode():
        again = backend.build(tiny_pipe.unet, variant, ctx)
    assert again.build_info["int8"]["hit"] and ov_backend.CONVERSIONS == before
    minmax = _build(tiny_pipe, "int8-minmax", samples)
    assert max(verification_drops(module, samples)) < max(verification_drops(minmax, samples))


def test_int8_builds_take_the_fp32_ir_in_memory(samples, tmp_path):
    """A min/max int8 build and the partial int8 derived from it never write the fp32 IR (9 s of
    a cold sd15 search); a float variant then writes it from the model converted earlier,
    without converting again, and another process reads it from the cache."""
    from sdopt.backends.base import BuildContext

    pipe = sdopt.build_preset("tiny")  # a UNet no other test converted in this process
    dev = detect("cpu")
    backend = get_backend("openvino")
    variants = {v.name: v for v in backend.variants(dev)}

    def build(name):
        ctx = BuildContext(device=dev, example=samples.verification[0].inputs,
                           calibration=[s.inputs for s in samples.calibration],
                           cache_dir=tmp_path)
        with torch.inference_mode():
            return backend.build(pipe.unet, variants[name], ctx)

    before = dict(ov_backend.CONVERSIONS)
    full = build("int8-minmax")
    inner = build("int8-inner-minmax")
    assert ov_backend.CONVERSIONS["convert_model"] == before["convert_model"] + 1
    assert ov_backend.CONVERSIONS["derived"] == before["derived"] + 1
    assert not (tmp_path / "openvino-ir").exists(), "no fp32 IR written for int8"
    assert full.build_info["ir"]["source"] == "converted" and not full.build_info["ir"]["written"]
    assert inner.build_info["ir"]["source"] == "process" and inner.build_info["ir"]["hit"]
    fp32 = build("fp32")
    assert ov_backend.CONVERSIONS["convert_model"] == before["convert_model"] + 1
    assert fp32.build_info["ir"]["written"]
    assert (tmp_path / "openvino-ir" / fp32.build_info["ir"]["key"] / "unet.xml").is_file()
    assert verification_drops(fp32, samples)[0] < TOLERANCE["fp32"]
    ov_backend._IN_MEMORY.clear()  # as in another process: the cache's files are read
    again = build("bf16")
    assert again.build_info["ir"]["source"] == "cache"
    assert ov_backend.CONVERSIONS["convert_model"] == before["convert_model"] + 1
