"""CUDA paths, on a machine with a GPU. CI and the CPU dev box have none: the whole module skips
there, visibly. Run on a GPU box with ``pytest tests/test_cuda.py -v``."""

import json

import numpy as np
import pytest
import torch

import sdopt
from sdopt.backends import load_builtin_backends
from sdopt.device import detect
from sdopt.optimize.manifest import MANIFEST_NAME

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU visible to torch: the CUDA paths are not checked")


def _image(pipe, prompt="a photo of a cat", seed=0, steps=4):
    gen = torch.Generator("cpu").manual_seed(seed)
    out = pipe(prompt, num_inference_steps=steps, generator=gen, height=64, width=64)
    return np.asarray(out.images[0], dtype=np.int16)


def test_detect_describes_the_gpu():
    dev = detect("auto")
    assert dev.kind == "cuda" and dev.torch_device == "cuda"
    fp = dev.fingerprint()
    assert fp["name"] == torch.cuda.get_device_name(0)
    assert fp["cuda_capability"] and fp["cuda_version"]


def test_every_gpu_variant_is_tried_or_says_why_not():
    dev = detect("cuda")
    rows = {}
    for backend in load_builtin_backends().values():
        for variant in backend.variants(dev):
            rows[variant.id] = backend.unavailable_reason(dev, variant)
    assert rows["torch_eager/fp16"] is None and rows["torch_eager/fp32"] is None
    # CPU-only variants refuse with a reason; GPU compilers either run or name what is missing.
    assert "cpu" in rows["onnxruntime/fp32"].lower()
    for vid in ("onnxruntime/cuda-fp16", "onnxruntime/tensorrt-fp16"):
        assert rows[vid] is None or "onnxruntime" in rows[vid].lower(), rows[vid]
    print(json.dumps(rows, indent=1))


def test_optimize_save_load_on_cuda(fresh_tiny_pipe, prompts, tmp_path):
    pipe = fresh_tiny_pipe
    optimized = sdopt.optimize_model(pipe, prompts, metric_drop_ths=0.05, device="cuda",
                                     backends=["torch_eager"], num_inference_steps=4,
                                     show=False, end_to_end=False)
    result = optimized.sdopt_result
    tried = {c.id: c.status for c in result.candidates}
    assert tried["torch_eager/fp16"] == "ok", tried
    assert result.selected.id in tried and result.selected.precision in ("fp16", "bf16", "fp32")
    before = _image(optimized)
    sdopt.save_model(optimized, tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / MANIFEST_NAME).read_text())
    assert manifest["device"]["kind"] == "cuda"
    loaded = sdopt.load_model(tmp_path / "saved", pipe=sdopt.build_preset("tiny"))
    after = _image(loaded)
    # Same kernels on the same GPU: the images match (cuDNN may pick another algorithm, so +-2).
    assert np.abs(before - after).max() <= 2


def test_cuda_timing_reports_gpu_memory():
    from sdopt.optimize.timing import measure

    pipe = sdopt.build_preset("tiny").to("cuda")
    x = torch.randn(2, 4, 8, 8, device="cuda")
    t = torch.tensor([10], device="cuda")
    h = torch.randn(2, 77, pipe.text_encoder.config.hidden_size, device="cuda")
    with torch.inference_mode():
        timing = measure(lambda i: pipe.unet(x, t, encoder_hidden_states=h), device_kind="cuda",
                         repeats=3)
    assert timing.memory_kind == "cuda_allocated" and timing.peak_memory_bytes > 0
    assert len(timing.samples_s) == 3 and all(s > 0 for s in timing.samples_s)


# Largest pixel difference from the fp32 pipeline's image, same seed
CUDA_GRAPH_TOLERANCE = {"fp16-cudagraphs": 8, "fp8-cudagraphs": 32}


@pytest.mark.parametrize("variant", list(CUDA_GRAPH_TOLERANCE))
def test_cuda_graph_variant_runs_in_the_pipeline_and_round_trips(fresh_tiny_pipe, prompts,
                                                                 tmp_path, variant):
    """CUDA graphs replay into static buffers: the pipeline's steps must each see their own
    output (a wrong image otherwise), and load_model rebuilds the fused, channels_last graph
    (fp8: its e4m3 linear layers from the saved weights)."""
    why = detect("cuda").precision_unavailable_reason("fp8") if "fp8" in variant else None
    if why:
        pytest.skip(why)
    optimized = sdopt.optimize_model(fresh_tiny_pipe, prompts, metric_drop_ths=0.05,
                                     device="cuda", backends=[f"torch_compile/{variant}"],
                                     num_inference_steps=4, show=False, end_to_end=False)
    tried = {c.id: (c.status, c.reason) for c in optimized.sdopt_result.candidates}
    assert tried[f"torch_compile/{variant}"][0] in ("ok", "selected"), tried
    reference = _image(sdopt.build_preset("tiny").to("cuda"))
    before = _image(optimized)
    assert np.abs(before - reference).max() <= CUDA_GRAPH_TOLERANCE[variant]
    sdopt.save_model(optimized, tmp_path / "saved")
    loaded = sdopt.load_model(tmp_path / "saved", pipe=sdopt.build_preset("tiny"))
    assert np.abs(before - _image(loaded)).max() <= 2


def test_step_caching_stacks_on_the_cuda_graph_pick(fresh_tiny_pipe, prompts):
    """The compiled step cache (techniques/step_cache_compiled.py) with CUDA graphs: its full and
    shallow graphs replay into static buffers, so each cached step must read the feature kept at
    its full step, not a buffer a later replay overwrote (the image would drift)."""
    from sdopt.optimize.optimized import assemble
    from sdopt.techniques.step_cache_compiled import CompiledStepCacheModule

    optimized = sdopt.optimize_model(fresh_tiny_pipe, prompts, metric_drop_ths=0.05,
                                     device="cuda", backends=["torch_compile/fp16-cudagraphs"],
                                     num_inference_steps=4, show=False, end_to_end=False)
    pick = optimized.unet.module
    spec = {"name": "step_cache", "interval": 2}
    stacked = assemble(sdopt.build_preset("tiny").to("cuda"), pick, [spec], detect("cuda"),
                       info={"techniques": [spec]})
    cache = next(m for m in stacked.unet.modules() if isinstance(m, CompiledStepCacheModule))
    plain, cached = _image(optimized), _image(stacked)
    assert (cache.full_calls, cache.cached_calls) == (2, 2)  # 4 steps, CFG in one batch
    assert np.abs(plain - cached).max() <= 48 and not np.array_equal(plain, cached)
    again = _image(stacked)
    assert np.array_equal(cached, again), "replays read their own step's feature"


def _driver_alloc(nbytes: int):
    """``nbytes`` of device memory from the CUDA driver, outside torch's allocator (as TensorRT
    and ONNX Runtime allocate); returns the function that frees it."""
    import ctypes

    cuda = ctypes.CDLL("libcuda.so.1")
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # the primary context current on this thread
    ptr = ctypes.c_uint64()
    assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)) == 0
    return lambda: cuda.cuMemFree_v2(ptr)


def test_device_memory_counts_memory_outside_torchs_allocator():
    """Issue #16, item 5a: NVML (or cudaMemGetInfo) sees what torch's allocator does not."""
    from sdopt.optimize.timing import DeviceMemory, measure, memory_baseline

    memory = DeviceMemory.open()
    print("device memory from", memory.source, "as", memory.kind)
    assert memory.kind in ("cuda_process", "cuda_device")
    baseline = memory_baseline(memory)
    torch_before = torch.cuda.memory_allocated()
    free = []
    x = torch.randn(64, 64, device="cuda")

    def call(i):
        if not free:
            free.append(_driver_alloc(512 * 2**20))  # an "engine" allocated at the first call
        return x @ x

    try:
        timing = measure(call, device_kind="cuda", warmup=1, repeats=3, memory=baseline)
    finally:
        for f in free:
            f()
    assert timing.memory_kind == memory.kind
    assert timing.peak_memory_bytes >= 500 * 2**20, timing.peak_memory_bytes
    # torch's allocator never saw it
    assert torch.cuda.max_memory_allocated() - torch_before < 100 * 2**20


def test_search_reports_each_candidates_device_memory(fresh_tiny_pipe, prompts):
    from sdopt.optimize.summary import candidates_table

    optimized = sdopt.optimize_model(fresh_tiny_pipe, prompts, metric_drop_ths=0.05,
                                     device="cuda", backends=["torch_eager"],
                                     num_inference_steps=4, show=False, end_to_end=False)
    rows = {c.id: c for c in optimized.sdopt_result.candidates if c.latency_s is not None}
    kinds = {c.memory_kind for c in rows.values()}
    assert len(kinds) == 1 and kinds <= {"cuda_process", "cuda_device"}, kinds
    # fp16 makes a copy of the weights: it adds memory; the original's were there before.
    assert rows["torch_eager/fp16"].peak_memory_bytes > 0
    headers = [str(c.header) for c in candidates_table(optimized.sdopt_result).columns]
    assert any(h.startswith("peak mem (GPU") for h in headers), headers


def test_stage_timer_records_events_and_synchronises_once_per_image(fresh_tiny_pipe,
                                                                    monkeypatch):
    """Issue #16, item 5b: no synchronisation inside the pipeline; one per image, by the bench."""
    from sdopt.gate.stages import StageTimer

    pipe = fresh_tiny_pipe.to("cuda")
    pipe.set_progress_bar_config(disable=True)
    timer = StageTimer("cuda")
    timer.attach(pipe)
    syncs = []
    real_sync = torch.cuda.synchronize
    try:
        _image(pipe)  # warm-up
        real_sync()
        timer.reset()
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: syncs.append(1))
        import time

        t0 = time.perf_counter()
        _image(pipe)
        monkeypatch.setattr(torch.cuda, "synchronize", real_sync)
        real_sync()
        wall = time.perf_counter() - t0
        assert syncs == []
        totals = dict(timer.totals)
        assert all(totals[s] > 0 for s in ("text_encoder", "unet", "vae_decode")), totals
        assert sum(totals.values()) <= wall * 1.05, (totals, wall)
    finally:
        timer.detach()


def test_compiled_fp16_vae_decoder_decodes_like_fp32_on_cuda():
    """CUDA's VAE setting (techniques/vae_torch_compile.py): one compiled fp16 graph decodes."""
    from sdopt.optimize.metrics import psnr_db
    from sdopt.techniques import apply_pipeline_techniques
    from sdopt.techniques.vae_torch_compile import CompiledDecoder

    pipe = sdopt.build_preset("tiny").to("cuda")
    reference = _image(pipe)
    apply_pipeline_techniques(pipe, [{"name": "vae_compiled", "precision": "fp16"}])
    assert isinstance(pipe.vae.decoder, CompiledDecoder)
    assert pipe.vae.decoder.module.decoder.conv_in.weight.dtype == torch.float16
    image = _image(pipe)
    assert pipe.vae.decoder.calls == 1
    assert psnr_db(reference.astype(np.uint8), image.astype(np.uint8)) > 35


def test_half_precision_text_encoder_encodes_like_fp32_on_cuda():
    """CUDA's text-encoder setting (techniques/text_encoder_half.py) in fp16."""
    from sdopt.optimize.metrics import psnr_db
    from sdopt.techniques import apply_pipeline_techniques

    pipe = sdopt.build_preset("tiny").to("cuda")
    reference = _image(pipe)
    apply_pipeline_techniques(pipe, [{"name": "text_encoder_half", "precision": "fp16"}])
    assert pipe.text_encoder.sdopt_half.dtype == torch.float16
    assert pipe.text_encoder.dtype == torch.float32
    image = _image(pipe)
    assert pipe.text_encoder.sdopt_half_calls == 2
    assert psnr_db(reference.astype(np.uint8), image.astype(np.uint8)) > 35
