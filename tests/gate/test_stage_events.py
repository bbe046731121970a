"""The gate's per-stage times on CUDA (issue #16, item 5b): the hooks record CUDA events and never
synchronise, so the pipeline keeps its CPU/GPU overlap; the bench synchronises once per image
and the events' times are read then. Checked with a fake torch.cuda.Event that follows the real
API (tests/optimize/fake_cuda.py: an event's time can be read only once it completed); the CPU
path keeps its wall clock. tests/test_cuda.py runs it on a GPU."""

from __future__ import annotations

import inspect

import pytest
import torch

from sdopt.gate.stages import STAGES, StageTimer
from tests.optimize.fake_cuda import FakeEvent, FakeGpu


def _params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]


def test_the_fake_event_follows_torchs():
    real = torch.cuda.Event
    assert _params(FakeEvent.__init__) == _params(real.__new__)
    for name in ("record", "elapsed_time", "synchronize", "query", "wait"):
        assert _params(getattr(FakeEvent, name)) == _params(getattr(real, name)), name


@pytest.fixture
def fake_gpu(monkeypatch):
    gpu = FakeGpu()
    monkeypatch.setattr(FakeEvent, "gpu", gpu)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", gpu.synchronize)
    return gpu


def _image(pipe):
    pipe(["a cat"], num_inference_steps=4, height=64, width=64, output_type="latent",
         generator=torch.Generator("cpu").manual_seed(0))


def test_cuda_hooks_record_events_and_never_synchronise(fresh_tiny_pipe, fake_gpu):
    pipe = fresh_tiny_pipe
    pipe.set_progress_bar_config(disable=True)
    timer = StageTimer("cuda")
    timer.attach(pipe)
    calls = []
    counters = [module.register_forward_hook(lambda *a: calls.append(1))
                for module in (pipe.unet, pipe.text_encoder)]
    try:
        for _image_index in range(2):
            timer.reset()
            calls.clear()
            _image(pipe)
            assert fake_gpu.syncs == _image_index           # none from the hooks
            recorded = len(fake_gpu.pending)
            assert recorded == 2 * len(calls) >= 2 * (1 + 4)  # a start and an end per call
            torch.cuda.synchronize()                        # the bench's, once per image
            totals = dict(timer.totals)
            assert totals["unet"] > 0 and totals["text_encoder"] > 0
            assert totals["vae_decode"] == 0                # latents: no decode
            assert timer.totals == totals                   # read twice: counted once
        # The second image reused the first one's events.
        assert fake_gpu.created == recorded
    finally:
        timer.detach()
        for handle in counters:
            handle.remove()


def test_an_unfinished_image_is_waited_for_not_misread(fresh_tiny_pipe, fake_gpu):
    """Read before the bench synchronised, each event is waited for (Event.synchronize), never
    read incomplete (elapsed_time would raise)."""
    timer = StageTimer("cuda")
    timer.attach(fresh_tiny_pipe)
    fresh_tiny_pipe.set_progress_bar_config(disable=True)
    try:
        _image(fresh_tiny_pipe)
        assert timer.totals["unet"] > 0 and fake_gpu.syncs == 0
    finally:
        timer.detach()


def test_the_cpu_path_keeps_the_wall_clock(fresh_tiny_pipe, monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("the CPU path touched torch.cuda")

    monkeypatch.setattr(torch.cuda, "Event", no_cuda)
    monkeypatch.setattr(torch.cuda, "synchronize", no_cuda)
    fresh_tiny_pipe.set_progress_bar_config(disable=True)
    timer = StageTimer("cpu")
    timer.attach(fresh_tiny_pipe)
    try:
        timer.reset()
        fresh_tiny_pipe(["a cat"], num_inference_steps=2, height=64, width=64,
                        generator=torch.Generator("cpu").manual_seed(0))
        assert set(timer.totals) == set(STAGES) and all(v > 0 for v in timer.totals.values())
    finally:
        timer.detach()
