"""The activation bound read from an exported UNet's graph (ONNX Runtime materialises attention
scores): the bound is the Softmax over the scores, its input and output, and a machine with too
little memory refuses the model in one line instead of being killed mid-search."""

import pytest
import torch

from sdopt.backends import export
from sdopt.backends.base import UNetInputs
from sdopt.backends.onnx_memory import FIT_FRACTION, check_activations_fit, node_peak_bytes
from sdopt.errors import SdoptError

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_unet_onnx(tmp_path_factory):
    from sdopt.models import build_preset

    unet = build_preset("tiny").unet
    side = 16  # latent 16x16: the attention block (after one downsample) sees 8x8 = 64 tokens
    gen = torch.Generator().manual_seed(0)
    example = UNetInputs(torch.randn(2, 4, side, side, generator=gen), torch.tensor([10, 10]),
                         torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen))
    directory = tmp_path_factory.mktemp("unet")
    export.export_unet(unet, example, directory)
    heads = unet.config.attention_head_dim  # diffusers' legacy name: the number of heads
    tokens = (side // 2) ** 2
    return directory / export.ONNX_FILE, 2 * heads * tokens * tokens * 4  # fp32 scores, batch 2


def test_bound_is_at_least_the_self_attention_scores_twice(tiny_unet_onnx):
    path, scores = tiny_unet_onnx
    need, node = node_peak_bytes(path)
    assert need >= 2 * scores, (need, node)
    assert need < 64 * scores  # a bound on one node, not the sum of the graph


def test_too_little_memory_refuses_in_one_line(tiny_unet_onnx):
    path, _ = tiny_unet_onnx
    need, node = node_peak_bytes(path)
    check_activations_fit(path, "onnxruntime/int8-static", available_bytes=int(need / FIT_FRACTION) + 1)
    with pytest.raises(SdoptError) as err:
        check_activations_fit(path, "onnxruntime/int8-static", available_bytes=need)
    text = str(err.value)
    assert "\n" not in text and text.startswith("onnxruntime/int8-static needs at least")
    assert node in text and "smaller height/width" in text


def test_the_search_records_the_refusal_and_goes_on(tiny_pipe, prompts, monkeypatch):
    """On a machine with too little memory for ONNX Runtime's attention the row says why, and
    another backend is picked."""
    import sdopt
    from sdopt.backends import onnx_memory

    monkeypatch.setattr(onnx_memory, "FIT_FRACTION", 1e-12)  # as if almost nothing were free
    result = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.05, device="cpu",
                                  backends=["onnxruntime/fp32", "torch_eager/bf16"],
                                  num_inference_steps=2, repeats=2, show=False,
                                  end_to_end=False, reuse_search=False).sdopt_result
    row = next(c for c in result.candidates if c.id == "onnxruntime/fp32")
    assert row.status == "failed" and "GiB of activations" in row.reason, row.reason
    assert result.selected.id != "onnxruntime/fp32"
