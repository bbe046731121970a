"""The decision cache's key (#18): it names the pipeline's class and every text tower, and it is
computed for pipelines whose denoiser is a transformer (the default reuse_search path)."""

from sdopt.device import detect
from sdopt.identity import weights_hash
from sdopt.models import build_preset, denoiser_of
from sdopt.optimize.decision_cache import decision_key


def _key(pipe):
    return decision_key(pipe, weights_hash(denoiser_of(pipe)), device=detect("cpu"), steps=4)


def test_same_weights_as_another_pipeline_class_is_another_search():
    text, image = _key(build_preset("tiny")), _key(build_preset("img2img-tiny"))
    assert text["unet"] == image["unet"], "the two presets share their weights"
    assert text["pipeline"] != image["pipeline"] and text != image


def test_every_text_tower_and_a_transformer_denoiser_are_in_the_key():
    key = _key(build_preset("sd3-tiny"))
    assert set(key["text_encoders"]) == {"text_encoder", "text_encoder_2", "text_encoder_3"}
    assert key["pipeline"] == "StableDiffusion3Pipeline" and key["unet_config"]
