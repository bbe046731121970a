import numpy as np
import pytest
import torch

import sdopt
from sdopt.device import detect
from sdopt.backends.base import BACKENDS, Backend, Variant, register
from sdopt.errors import SdoptError
from sdopt.optimize.optimized import OptimizedUNet

from ..conftest import image_array

FAST = dict(num_inference_steps=4, repeats=2, show=False)


def test_optimize_and_apply_variant_leave_the_users_pipeline_untouched(fresh_tiny_pipe):
    from sdopt.identity import weights_hash

    pipe = fresh_tiny_pipe
    hashes = {n: weights_hash(getattr(pipe, n)) for n in ("unet", "vae", "text_encoder")}
    before = image_array(pipe)
    variant = sdopt.apply_variant(pipe, "torch_int8/dynamic-linear")
    assert np.abs(image_array(variant) - before).max() > 0, "int8 really changes the numbers"
    sdopt.optimize_model(pipe, ["a cat"], metric_drop_ths=0.5, backends=["torch_eager",
                         "torch_int8"], **FAST)
    assert {n: weights_hash(getattr(pipe, n)) for n in hashes} == hashes
    assert np.array_equal(image_array(pipe), before)


def test_optimized_pipeline_is_used_like_the_original(tiny_pipe, prompts):
    optimized = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.05,
                                     backends=["torch_eager", "torch_int8"], **FAST)
    assert isinstance(optimized.unet, OptimizedUNet)
    assert not isinstance(tiny_pipe.unet, OptimizedUNet), "the user's pipeline is untouched"
    image = optimized(prompts[0], num_inference_steps=4,
                      generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    result = optimized.sdopt_result
    ids = [c.id for c in result.candidates]
    assert ids[0] == "torch_eager/fp32" and "torch_int8/dynamic-linear" in ids
    assert result.selected is not None and result.selected.status == "selected"
    assert result.selected.metric_drop <= 0.05
    measured = [c for c in result.candidates if c.latency_s]
    fastest = min(c.latency_s for c in measured if c.status in ("ok", "selected"))
    # The search's fastest, unless the side-by-side rounds preferred a close runner-up.
    assert result.selected.latency_s == fastest or any("re-timed side by side" in n
                                                       for n in result.notes)
    assert result.original.metric_drop == 0.0
    skipped = {c.id: c.reason for c in result.candidates if c.status == "skipped"}
    assert "CUDA" in skipped["torch_eager/fp16"]
    # reduced precision stays close to the original images
    diff = np.abs(image_array(optimized) - image_array(tiny_pipe))
    assert diff.mean() < 5


def test_lossless_only_when_no_threshold(tiny_pipe, prompts):
    optimized = sdopt.optimize_model(tiny_pipe, prompts, backends=["torch_eager", "torch_int8"],
                                     **FAST)
    result = optimized.sdopt_result
    rows = {c.id: c for c in result.candidates}
    assert rows["torch_eager/bf16"].status == "skipped"
    # (on a CPU without bf16 units the search skips bf16 first for its speed, saying so)
    assert "metric_drop_ths" in rows["torch_eager/bf16"].reason \
        or detect("cpu").only_slow(rows["torch_eager/bf16"].reason)
    assert rows["torch_int8/dynamic-linear"].status == "skipped"
    assert "metric_drop_ths" in rows["torch_int8/dynamic-linear"].reason
    assert result.selected.precision == "fp32"
    assert np.abs(image_array(optimized) - image_array(tiny_pipe)).max() <= 1


def test_tight_threshold_rejects_reduced_precision(tiny_pipe, prompts):
    # bf16 where this CPU runs it fast, else the int8 one (the search skips emulated bf16)
    lossy = "torch_eager/bf16" if detect("cpu").supports_bf16()[0] else \
        "torch_int8/dynamic-linear"
    optimized = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=1e-6,
                                     backends=["torch_eager", "torch_int8"], **FAST)
    rows = {c.id: c for c in optimized.sdopt_result.candidates}
    assert rows[lossy].status == "rejected"
    assert "> threshold" in rows[lossy].reason
    assert optimized.sdopt_result.selected.precision == "fp32"


class _Exploding(Backend):
    name = "test_exploding"

    def variants(self, device):
        return [Variant(self.name, "oom", "fp32", lossless=True),
                Variant(self.name, "nan", "fp32", lossless=True)]

    def build(self, unet, variant, ctx):
        if variant.name == "oom":
            raise MemoryError("cannot allocate 40 GB")
        from sdopt.backends.torch_module import TorchUNetModule

        class NaNs(TorchUNetModule):
            def forward(self, sample, *a, **k):
                return torch.full_like(sample, float("nan"))

        return NaNs(unet, variant, torch.float32)

    def save(self, module, directory):
        raise NotImplementedError

    def load(self, *a):
        raise NotImplementedError


@pytest.fixture
def exploding_backend():
    register(_Exploding)
    yield
    BACKENDS.pop(_Exploding.name)


def test_failing_candidates_are_recorded_and_the_search_goes_on(tiny_pipe, prompts,
                                                                exploding_backend):
    optimized = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.05,
                                     backends=["torch_eager", "test_exploding"], **FAST)
    rows = {c.id: c for c in optimized.sdopt_result.candidates}
    assert rows["test_exploding/oom"].status == "failed"
    assert rows["test_exploding/oom"].reason.startswith("out of memory")
    assert rows["test_exploding/nan"].status == "failed"
    assert "non-finite" in rows["test_exploding/nan"].reason
    assert optimized.sdopt_result.selected.backend == "torch_eager"


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_data=[]), "input_data is empty"),
    (dict(input_data=["ok", "  "]), r"input_data\[1\]"),
    (dict(input_data=None), "expected a list of prompts"),
    (dict(backends=["tensorflow_lite"]), "unknown backend name 'tensorflow_lite'"),
    (dict(metric_drop_ths=2.0), "out of range"),
    (dict(metric_drop_ths=-1), "out of range"),
    (dict(optimization_time="forever"), "optimization_time"),
    (dict(metric="nope"), "unknown metric"),
    (dict(height=60), "multiple of 8"),
    (dict(ignore_compressors=["pruning"]), "ignore_compressors"),
])
def test_bad_arguments_are_one_line_errors(tiny_pipe, kwargs, match):
    args = dict(input_data=["a cat"], **FAST)
    args.update(kwargs)
    with pytest.raises(SdoptError, match=match) as info:
        sdopt.optimize_model(tiny_pipe, **args)
    assert "\n" not in str(info.value)


def test_not_a_pipeline_is_refused():
    with pytest.raises(SdoptError, match="expected a diffusers Stable Diffusion pipeline"):
        sdopt.optimize_model(torch.nn.Linear(2, 2), ["a cat"])


def test_speedster_compiler_names_are_accepted(tiny_pipe):
    optimized = sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=0.05,
                                     ignore_compilers=["tvm", "torch_tensor_rt", "torch_compile",
                                                       "torch_int8"], **FAST)
    ids = {c.id for c in optimized.sdopt_result.candidates}
    assert not any(i.startswith(("torch_compile", "torch_int8")) for i in ids)


def test_store_latencies_writes_json(tiny_pipe, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=0.05, backends=["torch_eager"],
                         store_latencies=True, **FAST)
    data = json.loads((tmp_path / "sdopt_latencies.json").read_text())
    assert data["selected"]["latency_s"] > 0 and data["candidates"]


def test_same_search_is_reused_from_the_cache(fresh_tiny_pipe, prompts, monkeypatch):
    """A second identical call loads the decision (no candidate is built or timed again); any
    change to what decides it (here the threshold) searches again."""
    from sdopt.optimize import search

    kwargs = dict(metric_drop_ths=0.05, backends=["torch_eager"], num_inference_steps=2,
                  repeats=2, show=False, end_to_end=False, reuse_search=True)
    first = sdopt.optimize_model(fresh_tiny_pipe, prompts, **kwargs)
    calls = []
    real = search.run_search
    monkeypatch.setattr("sdopt.optimize.runner.run_search",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    again = sdopt.optimize_model(fresh_tiny_pipe, prompts, **kwargs)
    assert calls == [], "the second identical search ran again"
    r1, r2 = first.sdopt_result, again.sdopt_result
    assert r2.selected.id == r1.selected.id and r2.selected.latency_s == r1.selected.latency_s
    assert [c.id for c in r2.candidates] == [c.id for c in r1.candidates]
    assert "reused the search" in r2.notes[0]
    assert np.array_equal(image_array(first), image_array(again))
    assert not isinstance(fresh_tiny_pipe.unet, OptimizedUNet), "the user's pipeline is untouched"
    sdopt.optimize_model(fresh_tiny_pipe, prompts, **{**kwargs, "metric_drop_ths": 0.04})
    assert calls == [1], "another threshold is another search"
    sdopt.optimize_model(fresh_tiny_pipe, prompts, **{**kwargs, "reuse_search": False})
    assert calls == [1, 1]
