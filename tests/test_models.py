import numpy as np
import pytest

from sdopt.api import weights_hash
from sdopt.errors import SdoptError
from sdopt.models import PRESETS, build_preset, load_pipeline, make_clip_tokenizer, resolve_ref, save_preset

from .conftest import image_array


def test_tokenizer_is_offline_and_deterministic():
    a, b = make_clip_tokenizer(), make_clip_tokenizer()
    ids = a("a photo of an astronaut riding a horse on mars").input_ids
    assert ids == b("a photo of an astronaut riding a horse on mars").input_ids
    assert ids[0] == a.bos_token_id and ids[-1] == a.eos_token_id
    assert a.model_max_length == 77
    # learnt merges give word pieces, not one token per byte
    assert len(ids) < len("a photo of an astronaut riding a horse on mars")
    padded = a("x", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77


def test_presets_are_deterministic(tiny_pipe):
    again = build_preset("tiny")
    assert weights_hash(again.unet) == weights_hash(tiny_pipe.unet)
    assert weights_hash(again.text_encoder) == weights_hash(tiny_pipe.text_encoder)


def test_tiny_pipeline_makes_an_image(tiny_pipe):
    image = image_array(tiny_pipe)
    assert image.shape == (64, 64, 3)
    assert image.std() > 0


def test_sd15_preset_has_the_real_architecture():
    cfg = PRESETS["sd15"]
    assert cfg.unet["block_out_channels"] == (320, 640, 1280, 1280)
    assert cfg.unet["cross_attention_dim"] == 768
    assert cfg.text_encoder["vocab_size"] == 49408
    assert cfg.text_encoder["hidden_size"] == 768 and cfg.text_encoder["num_hidden_layers"] == 12
    assert cfg.vae["block_out_channels"] == [128, 256, 512, 512]


def test_saved_preset_loads_as_a_diffusers_folder(tmp_path, tiny_pipe):
    folder = save_preset("tiny", tmp_path / "tiny")
    assert (folder / "model_index.json").is_file()
    assert list(folder.glob("unet/*.safetensors"))
    pipe = load_pipeline(str(folder))
    assert np.array_equal(image_array(pipe), image_array(tiny_pipe))
    with pytest.raises(SdoptError, match="already exists"):
        save_preset("tiny", folder)


def test_resolve_ref_kinds(tmp_path):
    assert resolve_ref("tiny").kind == "preset"
    ref = resolve_ref("org/name@v1")
    assert (ref.kind, ref.value, ref.revision) == ("hub", "org/name", "v1")
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"")
    assert resolve_ref(str(single)).kind == "single_file"


def _write(path):
    path.write_bytes(b"x")
    return str(path)


@pytest.mark.parametrize("make,expected", [
    (lambda p: str(p / "missing" / "model"), "not found"),
    (lambda p: "", "empty"),
    (lambda p: _write(p / "m.ckpt"), "pickled"),
    (lambda p: (p / "nofolder").mkdir() or str(p / "nofolder"), "model_index.json"),
])
def test_bad_model_references_give_one_line(tmp_path, make, expected):
    with pytest.raises(SdoptError, match=expected) as info:
        load_pipeline(make(tmp_path))
    assert "\n" not in str(info.value)


def test_unreachable_hub_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SdoptError) as info:
        load_pipeline("some-org/some-model", revision="main")
    message = str(info.value)
    assert "cannot load hub model 'some-org/some-model@main'" in message
    assert "HF_HUB_OFFLINE" in message and "\n" not in message


def test_corrupt_single_file_is_reported(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SdoptError, match="cannot load single-file checkpoint"):
        load_pipeline(str(bad))
