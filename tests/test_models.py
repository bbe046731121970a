import numpy as np
import pytest

from sdopt.identity import weights_hash
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


# --- single-file (original LDM layout) checkpoints --------------------------------------------

@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    """The tiny preset as a user's single-file checkpoint, plus the diffusers folder that gives
    its configs (what --single-file-config points at)."""
    from .ldm_checkpoint import save_ldm_checkpoint

    root = tmp_path_factory.mktemp("single-file")
    folder = save_preset("tiny", root / "tiny-config")
    path = save_ldm_checkpoint(build_preset("tiny"), root / "tiny-ldm.safetensors")
    return path, folder


def test_ldm_checkpoint_has_the_original_layout(ldm_checkpoint):
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type
    from safetensors.torch import load_file

    state = load_file(str(ldm_checkpoint[0]))
    prefixes = {key.split(".", 1)[0] for key in state}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.input_blocks.0.0.weight" in state
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in state  # upsampler after attn
    assert "first_stage_model.decoder.up.1.upsample.conv.weight" in state  # LDM counts up blocks up
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv in LDM
    assert CHECKPOINT_KEY_NAMES["clip"] in state
    assert not any(".resnets." in key or "down_blocks" in key for key in state)
    # The tiny UNet lacks SD 1.x's marker key (output_blocks.11): diffusers still calls it v1,
    # its fallback; with config= the pipeline's configs come from the folder, not from this guess.
    assert CHECKPOINT_KEY_NAMES["v1"] not in state
    assert infer_diffusers_model_type(state) == "v1"


def test_ldm_single_file_loads_with_its_config_folder(ldm_checkpoint, tiny_pipe):
    import torch

    path, folder = ldm_checkpoint
    pipe = load_pipeline(str(path), single_file_config=str(folder))
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(tiny_pipe, part).state_dict(), getattr(pipe, part).state_dict()
        assert set(got) == set(want), part
        # diffusers loads single files non-strictly: a text-encoder weight the file lacks stays
        # an empty meta tensor instead of raising, so look for those before comparing values.
        assert not [k for k, t in got.items() if t.is_meta], part
        different = [k for k in want if not torch.equal(want[k], got[k].to(want[k].dtype))]
        assert not different, f"{part}: {different[:5]}"
        assert all(t.dtype == torch.float32 for t in got.values())
    assert type(pipe.scheduler).__name__ == type(tiny_pipe.scheduler).__name__
    assert np.array_equal(image_array(pipe, seed=3), image_array(tiny_pipe, seed=3))


def test_ldm_single_file_without_configs_is_one_clear_error(ldm_checkpoint, monkeypatch):
    # Without config= diffusers fetches SD 1.5's configs from the hub; offline that must be one
    # line that says what to pass.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SdoptError, match="--single-file-config") as info:
        load_pipeline(str(ldm_checkpoint[0]))
    assert "\n" not in str(info.value)


def test_ldm_single_file_missing_a_weight_is_refused_naming_it(ldm_checkpoint, tmp_path):
    """diffusers leaves a text-encoder weight the file lacks as an empty placeholder; sdopt
    refuses the model there instead of failing later at the first prompt."""
    from pathlib import Path as P

    from safetensors.torch import load_file, save_file

    path, folder = ldm_checkpoint
    state = load_file(str(path))
    dropped = [k for k in state if k.endswith("final_layer_norm.weight")]
    assert dropped
    for key in dropped:
        del state[key]
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(SdoptError, match="no weights for text_encoder .*final_layer_norm.weight"):
        load_pipeline(str(broken), single_file_config=P(folder))  # a Path works too
    with pytest.raises(SdoptError, match="is not a directory"):
        load_pipeline(str(path), single_file_config=str(tmp_path / "nope"))


def test_ldm_converter_follows_diffusers_on_the_sd15_layout():
    """The helper is generic: on SD 1.5's real architecture (4 blocks, no attention in the
    last, 2 VAE layers per block) diffusers' own converters map its keys back one to one."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES, convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint, infer_diffusers_model_type)
    from transformers import CLIPTextConfig, CLIPTextModel

    from .ldm_checkpoint import (CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, clip_to_ldm, unet_to_ldm,
                                 vae_to_ldm)

    preset = PRESETS["sd15"]
    with torch.device("meta"):  # shapes only: no 4 GB of weights
        unet = UNet2DConditionModel(**preset.unet)
        vae = AutoencoderKL(**preset.vae)
        text = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    unet_ldm = unet_to_ldm(unet.state_dict(), unet.config)
    checkpoint = {UNET_PREFIX + k: v for k, v in unet_ldm.items()}
    checkpoint.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict()).items()})
    checkpoint.update({CLIP_PREFIX + k: v for k, v in clip_to_ldm(text.state_dict()).items()})
    assert infer_diffusers_model_type(checkpoint) == "v1"
    assert CHECKPOINT_KEY_NAMES["v1"] in checkpoint
    for module, back in (
        (unet, convert_ldm_unet_checkpoint(checkpoint, unet.config)),
        (vae, convert_ldm_vae_checkpoint(checkpoint, vae.config)),
        (text, {k.removeprefix("text_model."): v  # transformers >= 5.6 has no text_model level
                for k, v in convert_ldm_clip_checkpoint(checkpoint).items()}),
    ):
        want = module.state_dict()
        assert set(back) == set(want), type(module).__name__
        assert all(back[k].shape == want[k].shape for k in want), type(module).__name__


def test_ldm_converter_refuses_what_it_cannot_name(tiny_pipe):
    from .ldm_checkpoint import LayoutError, unet_to_ldm, vae_to_ldm

    state = dict(tiny_pipe.unet.state_dict())
    state["down_blocks.0.motion_modules.0.weight"] = state["conv_in.weight"]
    with pytest.raises(LayoutError, match="motion_modules"):
        unet_to_ldm(state, tiny_pipe.unet.config)
    with pytest.raises(LayoutError, match="layers_per_block"):
        unet_to_ldm(tiny_pipe.unet.state_dict(),
                    {**tiny_pipe.unet.config, "layers_per_block": (2, 2)})
    vae = dict(tiny_pipe.vae.state_dict())
    vae["decoder.mid_block.attentions.0.rotary.weight"] = vae["quant_conv.weight"]
    with pytest.raises(LayoutError, match="rotary"):
        vae_to_ldm(vae)


# --- other families (#18) ----------------------------------------------------------------------

TINY_FAMILIES = ["sd2-tiny", "inpaint-tiny", "img2img-tiny", "sdxl-tiny", "sd3-tiny",
                 "flux-tiny", "pixart-tiny"]


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_family_presets_make_deterministic_images(name):
    import torch

    from sdopt.models import FAMILIES, denoiser_of, pipeline_inputs

    pipe, again = build_preset(name), build_preset(name)
    assert type(pipe).__name__ == FAMILIES[PRESETS[name].family]
    assert weights_hash(denoiser_of(pipe)) == weights_hash(denoiser_of(again))

    def image(p):
        out = p("a photo of a cat", **pipeline_inputs(p, 64, 64), num_inference_steps=3,
                generator=torch.Generator().manual_seed(0))
        return np.asarray(out.images[0], dtype=np.int16)

    first = image(pipe)
    assert first.shape == (64, 64, 3) and first.std() > 0
    assert np.array_equal(first, image(again))


def test_family_presets_have_their_familys_traits():
    from transformers import CLIPTextModelWithProjection

    sd2 = build_preset("sd2-tiny")
    assert sd2.scheduler.config.prediction_type == "v_prediction"
    assert sd2.unet.config.use_linear_projection
    assert list(sd2.unet.config.attention_head_dim) == [2, 4]
    inpaint = build_preset("inpaint-tiny")
    assert (inpaint.unet.config.in_channels, inpaint.unet.config.out_channels) == (9, 4)
    sdxl = build_preset("sdxl-tiny")
    assert isinstance(sdxl.text_encoder_2, CLIPTextModelWithProjection)
    assert sdxl.unet.config.addition_embed_type == "text_time"
    assert sdxl.watermark is None
    # What SDXL's _get_add_time_ids checks on every call.
    assert sdxl.unet.add_embedding.linear_1.in_features == \
        6 * sdxl.unet.config.addition_time_embed_dim + sdxl.text_encoder_2.config.projection_dim
    assert sdxl.unet.config.cross_attention_dim == \
        sdxl.text_encoder.config.hidden_size + sdxl.text_encoder_2.config.hidden_size


def test_full_size_family_presets_have_the_real_architectures():
    # Not built: the SDXL UNet alone is 10 GB in fp32.
    sdxl = PRESETS["sdxl"]
    assert sdxl.full_size and sdxl.family == "sdxl"
    assert sdxl.unet["block_out_channels"] == (320, 640, 1280)
    assert sdxl.unet["transformer_layers_per_block"] == (1, 2, 10)
    assert sdxl.unet["cross_attention_dim"] == 2048
    assert sdxl.unet["projection_class_embeddings_input_dim"] == 2816
    assert sdxl.text_encoder_2["hidden_size"] == 1280 and \
        sdxl.text_encoder_2["num_hidden_layers"] == 32
    sd21 = PRESETS["sd21"]
    assert sd21.scheduler["prediction_type"] == "v_prediction"
    assert sd21.unet["attention_head_dim"] == (5, 10, 20, 20)
    assert sd21.text_encoder["hidden_size"] == 1024
    assert not any(p.full_size for n, p in PRESETS.items() if n in TINY_FAMILIES + ["tiny"])


def test_saved_sdxl_preset_loads_as_a_diffusers_folder(tmp_path):
    import torch

    folder = save_preset("sdxl-tiny", tmp_path / "sdxl")
    pipe = load_pipeline(str(folder))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    gen = torch.Generator().manual_seed(0)
    a = pipe("a cat", num_inference_steps=2, generator=gen, output_type="np").images[0]
    gen = torch.Generator().manual_seed(0)
    b = build_preset("sdxl-tiny")("a cat", num_inference_steps=2, generator=gen,
                                  output_type="np").images[0]
    # The same weights; transformers picks another attention kernel for a loaded text encoder
    # (latents differ by ~1e-5).
    assert np.abs(a - b).max() < 2e-3


def test_default_images_for_image_pipelines():
    from sdopt.models import pipeline_inputs

    assert pipeline_inputs(build_preset("tiny"), 64, 48) == {"height": 64, "width": 48}
    img2img = pipeline_inputs(build_preset("img2img-tiny"), 64, 48)
    assert set(img2img) == {"image"} and img2img["image"].size == (48, 64)
    inpaint = pipeline_inputs(build_preset("inpaint-tiny"), 64, 64)
    assert set(inpaint) == {"height", "width", "image", "mask_image"}
    assert pipeline_inputs(build_preset("pixart-tiny"), 64, 64)["clean_caption"] is False
    assert inpaint["mask_image"].mode == "L"
    assert np.array_equal(np.asarray(inpaint["image"]),
                          np.asarray(pipeline_inputs(build_preset("inpaint-tiny"), 64, 64)["image"]))


def test_dit_presets_hold_a_transformer_and_t5():
    from transformers import T5EncoderModel

    from sdopt.models import denoiser_name, make_t5_tokenizer

    for name, t5_attr in (("sd3-tiny", "text_encoder_3"), ("flux-tiny", "text_encoder_2"),
                          ("pixart-tiny", "text_encoder")):
        pipe = build_preset(name)
        assert denoiser_name(pipe) == "transformer" and getattr(pipe, "unet", None) is None
        assert isinstance(getattr(pipe, t5_attr), T5EncoderModel)
    tok = make_t5_tokenizer()
    ids = tok("a photo of a cat").input_ids
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert ids == make_t5_tokenizer()("a photo of a cat").input_ids


# --- full-size DiT presets and the memory check (#18) --------------------------------------------

FULL_SIZE = [name for name, preset in PRESETS.items() if preset.full_size]

# Published parameter counts (transformers and text towers), in millions: SD3 medium's MMDiT
# 2,028M; FLUX.1's 11,901M; PixArt-Sigma XL/2's 611M; T5 v1.1 XXL's encoder 4,762M; CLIP ViT-L/14's
# text tower 123M; OpenCLIP ViT-bigG/14's 695M (SD3's two CLIP towers carry their projections).
PUBLISHED_MILLIONS = [
    ("sd3", "transformer", 2028), ("sd3", "text_encoder", 123), ("sd3", "text_encoder_2", 695),
    ("flux", "transformer", 11901), ("flux", "text_encoder", 123),
    ("flux", "text_encoder_2", 4762),
    ("pixart", "transformer", 611), ("pixart", "text_encoder", 4762),
]


@pytest.mark.parametrize("name", ["sd3", "flux", "pixart"])
def test_full_size_dit_presets_have_the_published_parameter_counts(name):
    from sdopt.models import preset_models_on_meta

    models = preset_models_on_meta(name)  # shapes only: Flux alone is 48 GB in fp32
    assert all(t.is_meta for m in models.values() if m is not None for t in m.parameters())
    for preset, part, millions in PUBLISHED_MILLIONS:
        if preset == name:
            count = sum(t.numel() for t in models[part].parameters())
            assert abs(count / 1e6 - millions) <= 0.01 * millions, (part, count)
    preset = PRESETS[name]
    assert preset.full_size and preset.default_size == 1024
    vae = models["vae"].config
    if name == "pixart":  # the SDXL VAE
        assert (vae.latent_channels, vae.scaling_factor) == (4, 0.13025)
        assert models["transformer"].config.interpolation_scale == 2
        assert not models["transformer"].config.use_additional_conditions
    else:  # SD3's and Flux's 16-channel VAE without quant convs
        assert vae.latent_channels == 16 and not vae.use_quant_conv
        assert (vae.scaling_factor, vae.shift_factor) == \
            {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159)}[name]
    if name == "sd3":  # T5 left out: the pipeline then feeds zeros of T5's shape
        assert models["text_encoder_3"] is None
        assert models["transformer"].config.pooled_projection_dim == \
            sum(models[p].config.projection_dim for p in ("text_encoder", "text_encoder_2"))


def test_sd3_without_t5_makes_images():
    import dataclasses

    from sdopt.models import pipeline_inputs

    preset = dataclasses.replace(PRESETS["sd3-tiny"], name="sd3-tiny-no-t5", text_encoder_3=None)
    PRESETS[preset.name] = preset
    try:
        pipe = build_preset(preset.name)
    finally:
        del PRESETS[preset.name]
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    image = np.asarray(pipe("a photo of a cat", **pipeline_inputs(pipe, 64, 64),
                            num_inference_steps=2).images[0])
    assert image.shape == (64, 64, 3)


def _no_memory(monkeypatch):
    """Say 1 GiB is available and record the device every preset model is built on."""
    import torch

    import sdopt.models

    devices = []
    build = sdopt.models._preset_models

    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return build(*args, **kwargs)

    monkeypatch.setattr(sdopt.models, "_preset_models", recording)
    monkeypatch.setattr(sdopt.models, "available_memory_bytes", lambda: 2**30)
    return devices


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_preset_that_cannot_fit_is_refused_before_allocating(name, monkeypatch):
    from sdopt.models import preset_fp32_bytes

    devices = _no_memory(monkeypatch)
    with pytest.raises(SdoptError) as info:
        build_preset(name)
    need = preset_fp32_bytes(name)
    message = str(info.value)
    assert message.startswith(f"preset '{name}' needs {need} bytes") and "\n" not in message
    assert f"has {2**30} bytes (1.0 GiB) of memory available" in message
    assert set(devices) == {"meta"}  # counted on the meta device, nothing built for real
    # fp32: parameters and buffers, 4 bytes each; a tiny preset is never checked.
    assert need > 3 * 2**30


def test_cli_refuses_a_preset_that_cannot_fit_with_exit_2(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from sdopt.cli import main

    devices = _no_memory(monkeypatch)
    result = CliRunner().invoke(main, ["models", "save", "flux", str(tmp_path / "flux")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: preset 'flux' needs ")
    assert "GiB) for its weights in fp32" in lines[0] and "(flux-tiny)" in lines[0]
    assert set(devices) == {"meta"} and not (tmp_path / "flux").exists()
