"""The calibration probe in a real search (#17): a calibrated variant is first built with one
sample and timed; its full calibration runs only when that probe could beat the best. A test
backend (a plugin, as users register them) records what each build was given. Its modules answer
with the real tiny UNet's outputs, computed once per input before the search, after a fixed
sleep: their speeds differ by 5x and more whatever the machine's load (a loaded 2-core machine
moved the UNet's own call time by more than the sleeps)."""

import time

import pytest
import torch

from sdopt.backends.base import BACKENDS, Backend, OptimizedModule, Variant
from sdopt.device import detect
from sdopt.optimize.metrics import resolve_metric
from sdopt.optimize.search import plan_candidates, run_search

# Extra seconds per call: the best so far, a probe that cannot beat it, a probe that can.
DELAYS = {"best": 0.3, "slow-calibrated": 1.5, "fast-calibrated": 0.0}


def _key(sample, timestep) -> tuple:
    return sample.numpy().tobytes(), float(timestep.float().reshape(-1)[0])


class _Delayed(OptimizedModule):
    def __init__(self, unet, variant, delay_s, outputs):
        super().__init__()
        self.unet, self.variant, self.delay_s, self.outputs = unet, variant, delay_s, outputs

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        key = _key(sample, timestep)
        if key not in self.outputs:
            self.outputs[key] = self.unet(sample, timestep, encoder_hidden_states,
                                          return_dict=False, **extra)[0]
        time.sleep(self.delay_s)
        return self.outputs[key].clone()


class ProbeTestBackend(Backend):
    name = "probe_test"

    def __init__(self):
        self.builds: dict[str, list[int]] = {}
        self.outputs: dict[tuple, torch.Tensor] = {}  # the UNet's output per input

    def variants(self, device):
        # One precision, so the order is the list's (equal priors): the best goes first.
        return [Variant(self.name, name, "int8") for name in DELAYS]

    def calibration_probe(self, variant):
        return variant.name != "best"

    def build(self, unet, variant, ctx):
        self.builds.setdefault(variant.name, []).append(len(ctx.calibration))
        return _Delayed(unet, variant, DELAYS[variant.name], self.outputs)

    def save(self, module, directory):
        raise NotImplementedError

    def load(self, directory, unet, variant, info, device):
        raise NotImplementedError


@pytest.fixture
def probe_backend(monkeypatch, tiny_pipe, samples):
    backend = ProbeTestBackend()
    with torch.inference_mode():
        for s in samples.samples:
            backend.outputs[_key(s.inputs.sample, s.inputs.timestep)] = s.reference
    monkeypatch.setitem(BACKENDS, backend.name, backend)
    return backend


def test_a_probe_that_cannot_win_skips_the_full_calibration(tiny_pipe, samples, probe_backend):
    dev = detect("cpu")
    reference = plan_candidates(dev)[0]
    variants = [reference] + probe_backend.variants(dev)
    n = len(samples.calibration)
    assert n > 1
    with torch.inference_mode():
        result = run_search(tiny_pipe.unet, samples, dev, variants, metric=resolve_metric(None),
                            metric_drop_ths=0.05, optimization_time="constrained",
                            repeats=3).result
    rows = {c.id: c for c in result.candidates}
    assert [c.id for c in result.candidates] == [v.id for v in variants]
    assert probe_backend.builds == {"best": [n], "slow-calibrated": [1],
                                    "fast-calibrated": [1, n]}
    slow = rows["probe_test/slow-calibrated"]
    assert slow.status == "skipped" and slow.latency_s is None
    assert "cannot beat probe_test/best" in slow.reason
    assert f"probe (built with 1 of {n} calibration samples" in slow.reason
    assert slow.build_s > 0, "the probe's seconds are counted"
    fast = rows["probe_test/fast-calibrated"]
    assert fast.status in ("ok", "selected") and fast.latency_s
    assert result.selected.id == "probe_test/fast-calibrated"


def test_exhaustive_calibrates_every_variant_fully(tiny_pipe, samples, probe_backend):
    dev = detect("cpu")
    variants = [plan_candidates(dev)[0]] + probe_backend.variants(dev)
    n = len(samples.calibration)
    with torch.inference_mode():
        run_search(tiny_pipe.unet, samples, dev, variants, metric=resolve_metric(None),
                   metric_drop_ths=0.05, optimization_time="constrained", repeats=1,
                   exhaustive=True)
    assert probe_backend.builds == {name: [n] for name in DELAYS}
