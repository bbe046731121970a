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
