"""The search's progress line names the candidate and says why its build is slow."""

import pytest

from sdopt.backends import load_builtin_backends
from sdopt.backends.base import BACKENDS
from sdopt.device import detect
from sdopt.optimize.runner import candidate_line


def _variant(candidate_id):
    load_builtin_backends()
    backend, _, name = candidate_id.partition("/")
    return next(v for v in BACKENDS[backend].variants(detect("cpu")) if v.name == name)


@pytest.mark.parametrize("candidate_id, words", [
    ("torch_compile/bf16", "compiling"),
    ("openvino/int8", "calibrating int8"),
    ("openvino/int8-minmax", "measuring int8 ranges"),
    ("openvino/fp32", "converting to OpenVINO"),
    ("onnxruntime/fp32", "exporting to ONNX"),
    ("onnxruntime/int8-static", "calibrating int8"),
    ("torch_int8/dynamic-linear", "quantizing int8"),
    ("torch_eager/bf16", "building"),
])
def test_the_build_line_says_what_takes_the_time(candidate_id, words):
    line = candidate_line(_variant(candidate_id), "build")
    assert line.startswith(f"candidate {candidate_id}: ") and words in line


def test_later_phases_and_the_start():
    variant = _variant("torch_eager/fp32")
    assert candidate_line(variant, "start") == "candidate torch_eager/fp32"
    assert "verifying" in candidate_line(variant, "verify")
    assert "timing" in candidate_line(variant, "time")
    assert "images" in candidate_line(variant, "images")
