from sdopt.optimize.capture import collect_samples


def test_every_unet_call_is_captured_with_its_reference_output(tiny_pipe, prompts):
    samples = collect_samples(tiny_pipe, prompts, height=64, width=64, steps=5, guidance_scale=7.5,
                              seed=0, n_verify=4)
    tiny_pipe.scheduler.set_timesteps(5)
    assert len(samples.samples) == len(tiny_pipe.scheduler.timesteps) * len(prompts)
    first = samples.samples[0]
    assert tuple(first.inputs.sample.shape) == (2, 4, 32, 32)  # CFG doubles the batch
    assert first.reference.shape == first.inputs.sample.shape
    # verification covers the whole timestep range, not only the first step
    all_t = sorted({s.timestep for s in samples.samples})
    ver_t = samples.timesteps
    assert ver_t[0] == all_t[0] and ver_t[-1] == all_t[-1]
    assert len(samples.verification) == 4
    assert len(samples.calibration) == len(samples.samples) - 4
    ids = {id(s) for s in samples.verification}
    assert not ids & {id(s) for s in samples.calibration}


def test_reference_outputs_are_what_the_unet_returns(tiny_pipe, prompts):
    import torch

    samples = collect_samples(tiny_pipe, prompts[:1], height=64, width=64, steps=2,
                              guidance_scale=7.5, seed=0)
    s = samples.samples[1]
    with torch.inference_mode():
        again = tiny_pipe.unet(s.inputs.sample, s.inputs.timestep,
                               encoder_hidden_states=s.inputs.encoder_hidden_states,
                               return_dict=False)[0]
    assert torch.equal(again, s.reference)


def test_decoded_capture_is_the_end_to_end_reference(tiny_pipe, prompts):
    """The capture run, decoded and timed, gives the same images as a separate end-to-end run
    of the original (the search uses it as the reference instead of generating them again) and
    the same recorded calls as a latents-only capture."""
    import numpy as np
    import torch

    from sdopt.optimize.endtoend import EndToEnd, ImageRun

    kwargs = dict(height=64, width=64, steps=3, guidance_scale=7.5, seed=5, n_verify=2)
    latents_only = collect_samples(tiny_pipe, prompts[:2], **kwargs)
    decoded = collect_samples(tiny_pipe, prompts[:2], decode=True, **kwargs)
    assert not latents_only.images and not latents_only.latencies_s
    assert len(decoded.images) == 2 and all(t > 0 for t in decoded.latencies_s)
    assert decoded.images[0].dtype == np.uint8
    for a, b in zip(latents_only.samples, decoded.samples):
        assert torch.equal(a.reference, b.reference)
    e2e = EndToEnd(list(prompts[:2]), 64, 64, 3, 7.5, 5, min_timed=3)
    separate = e2e.run(tiny_pipe)
    merged = e2e.run_reference(tiny_pipe, ImageRun(decoded.images, decoded.latencies_s))
    assert all(np.array_equal(x, y) for x, y in zip(separate.images, merged.images))
    # Two prompts captured, three timed generations wanted: one more is made, none repeated.
    assert len(merged.latencies_s) == 3 and merged.latencies_s[:2] == decoded.latencies_s



def test_each_captured_call_is_timed_without_the_hooks_around_it(tiny_pipe, prompts):
    """On CPU every recorded call carries its own seconds, measured inside every other forward
    hook (the capture's copies, or a user's hooks, stay out); the original's per-call latency is
    taken from the calls of every generation but the first, whose first calls are cold."""
    import time

    pause = 0.2  # far longer than a call of the tiny UNet
    handles = [tiny_pipe.unet.register_forward_pre_hook(lambda *a: time.sleep(pause)),
               tiny_pipe.unet.register_forward_hook(lambda *a: time.sleep(pause))]
    try:
        samples = collect_samples(tiny_pipe, prompts, height=64, width=64, steps=2,
                                  guidance_scale=7.5, seed=0, n_verify=2, decode=True)
    finally:
        for handle in handles:
            handle.remove()
    assert len(prompts) >= 2
    assert all(0 < s.latency_s < pause for s in samples.samples), \
        [s.latency_s for s in samples.samples]
    # the hooks ran: two calls per image, each paused twice
    assert len(samples.latencies_s) == len(prompts)
    assert all(image_s > 2 * 2 * pause for image_s in samples.latencies_s)
    later = [s.latency_s for s in samples.samples if s.prompt_index != 0]
    assert samples.warm_call_latencies_s() == later and later
    assert samples.peak_rss_bytes and samples.peak_rss_bytes > 0


def test_the_replaceable_components_are_timed_per_image(tiny_pipe, prompts):
    """The VAE decoder and the text encoder each get their seconds per generation (what a
    setting replacing them could save at most); without decoding there is no VAE to time."""
    samples = collect_samples(tiny_pipe, prompts, height=64, width=64, steps=2,
                              guidance_scale=7.5, seed=0, n_verify=2, decode=True)
    assert set(samples.component_s) == {"vae", "text_encoder"}
    assert all(len(v) == len(prompts) and min(v) > 0 for v in samples.component_s.values())
    seconds = samples.component_seconds()
    assert all(0 < seconds[name] < min(samples.latencies_s) for name in ("vae", "text_encoder"))
    assert collect_samples(tiny_pipe, prompts[:1], height=64, width=64, steps=2,
                           guidance_scale=7.5, seed=0).component_s == {}
