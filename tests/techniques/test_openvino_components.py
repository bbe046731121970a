"""The VAE decoder and the text encoders compiled with OpenVINO (issue #20), on the tiny
presets: the compiled component matches torch fp32 (tightly in fp32, loosely in bf16), runs in
place of torch (counted, never timed), keeps what the pipeline reads (config, dtype, device,
output types), leaves the user's components untouched, and cannot stack with the bf16 VAE."""

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the openvino package is not installed")

import sdopt  # noqa: E402
from sdopt.device import DeviceInfo, detect  # noqa: E402
from sdopt.optimize.metrics import psnr_db  # noqa: E402
from sdopt.optimize.optimized import with_unet  # noqa: E402
from sdopt.techniques import (apply_pipeline_techniques, unavailable_reason,  # noqa: E402
                              validate_specs)
from sdopt.techniques.openvino_graph import (CONVERSIONS, _CONVERTED,  # noqa: E402
                                              ir_key_parts)
from sdopt.techniques.text_encoder_openvino import openvino_text_encoder  # noqa: E402
from sdopt.techniques.vae_openvino import OpenVINODecoder, openvino_decoder_vae  # noqa: E402

# max abs error on a [-1, 1] image / on CLIP activations: fp32 is the same computation
# reordered, bf16 keeps 8 bits of mantissa.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.1}


@pytest.fixture(scope="module")
def sdxl():
    return sdopt.build_preset("sdxl-tiny")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_vae_decodes_like_torch_fp32(tiny_pipe, precision):
    vae = openvino_decoder_vae(tiny_pipe.vae, precision)
    assert isinstance(vae.decoder, OpenVINODecoder) and vae is not tiny_pipe.vae
    assert type(tiny_pipe.vae.decoder).__name__ == "Decoder", "the user's VAE keeps its decoder"
    assert (vae.dtype, vae.device, dict(vae.config)) == \
        (tiny_pipe.vae.dtype, tiny_pipe.vae.device, dict(tiny_pipe.vae.config))
    for shape in [(1, 4, 8, 8), (2, 4, 12, 16)]:  # another latent size: compiled per shape
        z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = tiny_pipe.vae.decode(z).sample
        got = vae.decode(z).sample
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max() < TOLERANCE[precision]
        assert torch.equal(vae.decode(z, return_dict=False)[0], got)
    assert vae.decoder.calls == 4


def test_openvino_vae_is_converted_once_per_vae(tiny_pipe):
    openvino_decoder_vae(tiny_pipe.vae, "bf16")
    before = CONVERSIONS.get("vae_decoder", 0)
    openvino_decoder_vae(tiny_pipe.vae, "fp32")
    assert CONVERSIONS["vae_decoder"] == before, "the fp32 IR serves every precision"


def test_another_process_reads_the_converted_ir_from_the_cache(tiny_pipe, sdxl):
    """The in-process memo cleared (as in a new process): the IR comes from sdopt's cache, no
    conversion runs, and the graph gives the same output as before."""
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    first = openvino_decoder_vae(tiny_pipe.vae, "fp32").decode(z).sample
    ids = sdxl.tokenizer(["a cat"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    encoded = openvino_text_encoder(sdxl.text_encoder_2, "fp32")(ids, output_hidden_states=True)
    before = dict(CONVERSIONS)
    assert before.get("vae_decoder", 0) >= 1 and before.get("text_encoder", 0) >= 1
    _CONVERTED.pop(tiny_pipe.vae.decoder)
    _CONVERTED.pop(sdxl.text_encoder_2)
    again = openvino_decoder_vae(tiny_pipe.vae, "fp32").decode(z).sample
    encoded_again = openvino_text_encoder(sdxl.text_encoder_2, "fp32")(
        ids, output_hidden_states=True)
    assert CONVERSIONS == before, "a cache hit: nothing converted again"
    assert torch.equal(first, again)
    assert torch.equal(encoded.text_embeds, encoded_again.text_embeds)
    assert all(torch.equal(a, b) for a, b in zip(encoded.hidden_states,
                                                 encoded_again.hidden_states))


def test_the_cache_key_follows_weights_config_and_shapes(tiny_pipe):
    """Other weights, another config or other traced shapes: another IR."""
    import copy

    import openvino as ov

    from sdopt.cache import make_key
    from sdopt.techniques.vae_openvino import PostQuantDecoder

    vae = tiny_pipe.vae
    module = PostQuantDecoder(vae.post_quant_conv, vae.decoder)
    kwargs = {"example_input": torch.zeros(1, 4, 8, 8),
              "input": [ov.PartialShape([-1, 4, -1, -1])]}
    key = make_key(ir_key_parts(module, "vae_decoder:4", kwargs, vae.config))
    assert key == make_key(ir_key_parts(module, "vae_decoder:4", dict(kwargs), vae.config))
    other = copy.deepcopy(module)
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(1)
    assert key != make_key(ir_key_parts(other, "vae_decoder:4", kwargs, vae.config))
    config = {**dict(vae.config), "scaling_factor": 0.5}
    assert key != make_key(ir_key_parts(module, "vae_decoder:4", kwargs, config))
    wider = {**kwargs, "example_input": torch.zeros(1, 4, 16, 16)}
    assert key != make_key(ir_key_parts(module, "vae_decoder:4", wider, vae.config))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_text_encoders_match_torch_fp32(sdxl, precision):
    ids = sdxl.tokenizer(["a cat", "a dog on a hill"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    for name in ("text_encoder", "text_encoder_2"):  # CLIP, then CLIP with projection
        original = getattr(sdxl, name)
        encoder = openvino_text_encoder(original, precision)
        assert encoder is not original and encoder.config is not None
        assert (encoder.dtype, encoder.device) == (original.dtype, original.device)
        with torch.no_grad():
            expected = original(ids, output_hidden_states=True)
        got = encoder(ids, output_hidden_states=True)
        assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
        for key in expected.keys():
            pairs = zip(got[key], expected[key]) if key == "hidden_states" else \
                [(got[key], expected[key])]
            for a, b in pairs:
                assert a.shape == b.shape and (a - b).abs().max() < TOLERANCE[precision], key
        plain = encoder(ids)
        assert plain.hidden_states is None
        assert len(encoder(ids, return_dict=False)) == len(expected.keys()) - 1
        assert encoder.sdopt_graph_calls == 3
        # Padding in an attention mask: not what the graph was converted for, torch answers.
        mask = torch.ones_like(ids)
        mask[:, 40:] = 0
        with torch.no_grad():
            masked = original(ids, attention_mask=mask)
        assert torch.equal(encoder(ids, attention_mask=mask)[0], masked[0])
        assert encoder.sdopt_graph_calls == 3


def test_openvino_t5_takes_the_padding_mask():
    """PixArt's T5 is called with its padding mask: the graph takes it (no torch fallback)."""
    pipe = sdopt.build_preset("pixart-tiny")
    original = pipe.text_encoder
    encoder = openvino_text_encoder(original, "fp32")
    ids = torch.randint(0, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    for kwargs in ({"attention_mask": mask}, {}):
        with torch.no_grad():
            expected = original(ids, **kwargs)[0]
        assert (encoder(ids, **kwargs)[0] - expected).abs().max() < TOLERANCE["fp32"]
    assert encoder.sdopt_graph_calls == 2


def test_the_pipeline_runs_with_both_compiled(tiny_pipe):
    """fp32 everywhere: the image is the torch pipeline's up to rounding."""
    specs = [{"name": "vae_openvino", "precision": "fp32"},
             {"name": "text_encoder_openvino", "precision": "fp32"}]
    pipe = with_unet(tiny_pipe, tiny_pipe.unet)
    apply_pipeline_techniques(pipe, specs)
    images = []
    for p in (tiny_pipe, pipe):
        gen = torch.Generator().manual_seed(0)
        images.append(np.asarray(p("a photo of a cat", num_inference_steps=4,
                                   generator=gen).images[0]))
    assert pipe.vae.decoder.calls == 1 and pipe.text_encoder.sdopt_graph_calls >= 1
    assert psnr_db(images[0], images[1]) > 45
    assert tiny_pipe.vae is not pipe.vae and tiny_pipe.text_encoder is not pipe.text_encoder


def test_reasons_and_conflicts():
    spec = {"name": "vae_openvino", "precision": "bf16"}
    cuda = DeviceInfo(kind="cuda", name="GPU", cores=1)
    assert "CPU only" in unavailable_reason(spec, None, cuda)
    cpu = detect("cpu")
    has_bf16 = cpu.precision_unavailable_reason("bf16") is None
    fp32 = unavailable_reason({"name": "vae_openvino", "precision": "fp32"}, None, cpu)
    assert (fp32 is not None) == has_bf16, "fp32 is the setting for CPUs without bf16 units"
    with pytest.raises(sdopt.SdoptError, match="both replace the pipeline's vae"):
        validate_specs([{"name": "vae_bf16"}, spec], "m.json")
    with pytest.raises(sdopt.SdoptError, match=r"techniques\[0\]\.precision"):
        validate_specs([{"name": "text_encoder_openvino", "precision": "int4"}], "m.json")
    validate_specs([spec, {"name": "text_encoder_openvino", "precision": "fp32"}], "m.json")


LOAD = """
import json, sys
import numpy as np, torch
import sdopt
loaded = sdopt.load_model(sys.argv[1], pipe=sdopt.build_preset("tiny"))
gen = torch.Generator().manual_seed(7)
np.save(sys.argv[2], np.asarray(loaded("a photo of a cat", num_inference_steps=4,
                                       generator=gen).images[0]))
from sdopt.techniques.openvino_graph import CONVERSIONS
print(json.dumps([loaded.unet.info["techniques"], type(loaded.vae.decoder).__name__,
                  loaded.text_encoder.sdopt_graph_calls, CONVERSIONS]))
"""


def test_saved_then_loaded_in_a_new_process_gives_the_same_image(tmp_path, tiny_pipe):
    """The manifest records the specs; load_model applies them again (nothing of OpenVINO is
    saved), reading the converted IRs from sdopt's cache (no conversion in the new process), and
    gives the same image."""
    import json
    import subprocess
    import sys

    from sdopt.optimize.optimized import assemble

    cpu = detect("cpu")
    precision = "bf16" if cpu.precision_unavailable_reason("bf16") is None else "fp32"
    specs = [{"name": "vae_openvino", "precision": precision},
             {"name": "text_encoder_openvino", "precision": precision}]
    base = sdopt.apply_variant(tiny_pipe, "torch_eager/fp32")
    optimized = assemble(tiny_pipe, base.unet.module, specs, cpu,
                         info={**base.unet.info, "techniques": specs})
    directory = tmp_path / "saved"
    sdopt.save_model(optimized, directory)
    gen = torch.Generator().manual_seed(7)
    first = np.asarray(optimized("a photo of a cat", num_inference_steps=4,
                                 generator=gen).images[0])
    assert optimized.vae.decoder.calls == 1
    proc = subprocess.run([sys.executable, "-c", LOAD, str(directory), str(tmp_path / "b.npy")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    techniques, decoder, graph_calls, conversions = json.loads(
        proc.stdout.strip().splitlines()[-1])
    assert techniques == specs and decoder == "OpenVINODecoder" and graph_calls >= 1
    assert conversions == {}, "the new process read both IRs from the cache"
    assert np.array_equal(first, np.load(tmp_path / "b.npy"))


LOSS_NOTE = "`loss_type=None` was set in the config but it is unrecognized"


def test_converting_a_text_encoder_prints_no_loss_type_note(tiny_pipe, tmp_path, monkeypatch):
    """OpenVINO's tracer reads every attribute of the encoder, transformers' training-only
    ``loss_function`` too, whose note about ``loss_type`` is silenced for that call only. The
    output is captured by a handler on the logger that says it (transformers' own handler writes
    to the stream it found at import time, which pytest's fd capture does not see), with
    transformers at its default verbosity (the test session runs it at error level)."""
    import copy
    import io
    import logging

    from transformers.utils import logging as transformers_logging

    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path / "cache"))  # a real conversion, not a hit
    encoder = copy.deepcopy(tiny_pipe.text_encoder)
    logger = logging.getLogger("transformers.modeling_utils")
    printed = io.StringIO()
    handler = logging.StreamHandler(printed)
    logger.addHandler(handler)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()
    try:
        transformers_logging.warning_once.cache_clear()  # the note is printed once per process
        before = CONVERSIONS.get("text_encoder", 0)
        openvino_text_encoder(encoder, "fp32")
        assert CONVERSIONS["text_encoder"] == before + 1
        assert LOSS_NOTE not in printed.getvalue()
        assert logger.level == logging.NOTSET, "the level is restored"
        # Outside sdopt's conversion transformers still says it (the capture would have seen it).
        transformers_logging.warning_once.cache_clear()  # the silenced call was remembered
        encoder.loss_function
        assert LOSS_NOTE in printed.getvalue()
    finally:
        transformers_logging.set_verbosity(verbosity)
        logger.removeHandler(handler)
