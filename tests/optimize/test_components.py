"""The capture records one image's calls into the replaceable components (the VAE decode, the
text encoders), and a component setting is timed by replaying them side by side."""

import numpy as np
import pytest
import torch

from sdopt.optimize.capture import collect_samples
from sdopt.optimize.components import ComponentCalls, setting_saving
from sdopt.optimize.endtoend import to_uint8

PROMPTS = ["a photo of a cat", "a watercolor of a harbour"]


@pytest.fixture(scope="module")
def captured(tiny_pipe):
    return collect_samples(tiny_pipe, PROMPTS, height=64, width=64, steps=2, guidance_scale=7.5,
                           seed=0, n_verify=2, decode=True)


def test_the_capture_records_the_first_images_component_calls(tiny_pipe, captured):
    calls = captured.component_calls.calls
    assert set(calls) == {"vae", "text_encoder"}
    # one decode of the first image's latents, the text encoder once per prompt and once per
    # negative prompt (classifier-free guidance): the second image's calls are not recorded
    assert [a for a, _, _ in calls["vae"]] == ["vae"]
    assert [a for a, _, _ in calls["text_encoder"]] == ["text_encoder"] * 2
    (_, (z,), _), = calls["vae"]
    side = 64 // tiny_pipe.vae_scale_factor
    assert tuple(z.shape) == (1, tiny_pipe.vae.config.latent_channels, side, side)
    # what decode received: decoding it again gives the first image
    with torch.inference_mode():
        image = tiny_pipe.vae.decode(z, return_dict=False)[0]
    pixels = tiny_pipe.image_processor.postprocess(image, output_type="np")[0]
    assert np.array_equal(to_uint8(pixels), captured.images[0])


def test_without_images_no_component_call_is_recorded(tiny_pipe):
    samples = collect_samples(tiny_pipe, PROMPTS[:1], height=64, width=64, steps=2,
                              guidance_scale=7.5, seed=0, n_verify=1)
    assert samples.component_calls is None and samples.component_s == {}


def test_a_setting_is_timed_by_replaying_its_components_calls(tiny_pipe, captured):
    calls = captured.component_calls
    replays = []
    hook = tiny_pipe.vae.decoder.register_forward_pre_hook(lambda *a: replays.append(1))
    try:
        saving = setting_saving(calls, "vae", tiny_pipe, tiny_pipe, device_kind="cpu")
    finally:
        hook.remove()
    # one untimed replay of the setting's pipeline, then both in every round
    assert len(replays) == 1 + 2 * saving["rounds"] and saving["rounds"] >= 3
    assert saving["q1"] <= saving["saved_s"] <= saving["q3"]
    assert saving["latency_s"] > 0 and saving["reference_latency_s"] > 0


def test_a_component_the_capture_did_not_see_cannot_be_timed(tiny_pipe):
    with pytest.raises(RuntimeError, match="recorded no call of the pipeline's vae"):
        ComponentCalls().replay(tiny_pipe, "vae")


@pytest.mark.parametrize("slower", ["base", "row"])
def test_two_rounds_that_decide_are_all_the_rounds(captured, slower):
    """A setting that saves (or loses) the decisive share in both of its first two rounds is
    not replayed further. Stand-ins for the two pipelines' decoders: one returns at once, the
    other sleeps 0.2 s (the loop's control is under test, not a decoder's speed)."""
    import time
    from types import SimpleNamespace

    def pipeline(seconds):
        return SimpleNamespace(vae=SimpleNamespace(decode=lambda *a, **k: time.sleep(seconds)))

    pipe, on = (pipeline(0.0), pipeline(0.2)) if slower == "base" else (pipeline(0.2),
                                                                          pipeline(0.0))
    saving = setting_saving(captured.component_calls, "vae", pipe, on, device_kind="cpu",
                            decisive_s=0.1)
    assert saving["rounds"] == 2
    assert (saving["saved_s"] > 0.1) == (slower == "base")
    # without a decisive saving, the minimum rounds
    assert setting_saving(captured.component_calls, "vae", pipe, on,
                          device_kind="cpu")["rounds"] >= 3
