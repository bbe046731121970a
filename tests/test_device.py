"""What a CPU without bf16 units still runs: bf16 is skipped by the search for its speed, but a
candidate named explicitly or a model saved on a CPU with bf16 runs here, slower, with a warning
(GitHub's hosted runners include CPUs without bf16; a gate pinned to a bf16 candidate must not
turn into a bad-input error there)."""

import logging

import numpy as np

import sdopt
from sdopt.device import detect

from .conftest import cpu_described, image_array


def test_only_the_bf16_speed_reason_is_only_slow():
    cpu = cpu_described(bf16=False)
    reason = cpu.precision_unavailable_reason("bf16")
    assert reason and cpu.only_slow(reason)
    assert not cpu.only_slow(None) and not cpu.only_slow("TensorRT needs an NVIDIA GPU")
    assert cpu_described(bf16=True).precision_unavailable_reason("bf16") is None


def test_a_named_bf16_candidate_runs_on_a_cpu_without_bf16(fresh_tiny_pipe, monkeypatch, caplog,
                                                           tmp_path):
    from sdopt.optimize import api

    monkeypatch.setattr(api, "detect", lambda device=None: cpu_described(bf16=False))
    with caplog.at_level(logging.WARNING, logger=api.__name__):
        optimized = sdopt.apply_variant(fresh_tiny_pipe, "torch_eager/bf16")
    assert "candidate 'torch_eager/bf16' runs here, but slower than fp32" in caplog.text
    image = image_array(optimized)
    sdopt.save_model(optimized, tmp_path / "m")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=api.__name__):
        loaded = sdopt.load_model(tmp_path / "m", pipe=sdopt.build_preset("tiny"))
    assert "(torch_eager/bf16) runs here, but slower than fp32" in caplog.text
    assert np.abs(image_array(loaded) - image).max() <= 1
