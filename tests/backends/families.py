"""Shared by the per-family backend tests (#18): each family's tiny pipeline with its recorded
denoiser calls (built once per test session, as the search records them), and the numeric drop
of a backend module on the held-out calls."""

import importlib.util

import pytest
import torch

import sdopt
from sdopt.optimize.capture import collect_samples
from sdopt.optimize.metrics import resolve_metric

from ..conftest import PROMPTS

OPENVINO = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                              reason="openvino is not installed")
NNCF = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                          reason="nncf is not installed")
ORT = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                         reason="onnxruntime is not installed")

_RECORDED: dict = {}


def recorded(family: str):
    """The family's tiny pipeline and its recorded denoiser calls (64 px, 4 steps, CFG 7.5;
    PixArt's resolution binning makes its latents 32 x 32; image-to-image and inpainting get
    their default start image and mask), built once per test session."""
    if family not in _RECORDED:
        pipe = sdopt.build_preset(family)
        samples = collect_samples(pipe, PROMPTS, height=64, width=64, steps=4,
                                  guidance_scale=7.5, seed=0, n_verify=4)
        _RECORDED[family] = (pipe, samples)
    return _RECORDED[family]


def call(module, inputs, **changed):
    """``module`` on one recorded call, with some of its extra inputs changed."""
    extra = {**inputs.extra, **changed}
    with torch.inference_mode():
        return module(inputs.sample, inputs.timestep, inputs.encoder_hidden_states, **extra)


def drops(module, samples) -> list[float]:
    """The default metric's drop of ``module`` on each held-out recorded call."""
    metric = resolve_metric(None)
    return [float(metric.fn(s.reference, call(module, s.inputs))) for s in samples.verification]
