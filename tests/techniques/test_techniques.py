"""Each technique on the tiny pipeline: it runs, it changes the work that costs time (counted:
UNet block calls, attention tokens, scheduler steps, VAE precision; never timed here), its images
stay close to the original's, and it leaves the user's pipeline untouched."""

import types

import numpy as np
import pytest
import torch

import sdopt
from sdopt.optimize.metrics import psnr_db
from sdopt.optimize.optimized import OptimizedUNet, with_unet
from sdopt.techniques import (TECHNIQUES, all_specs, apply_pipeline_techniques,
                              apply_unet_techniques, base_module, label, unavailable_reason,
                              validate_specs)
from sdopt.techniques.step_cache import StepCacheModule
from sdopt.techniques.token_merge import bipartite_soft_matching_2d, processors

STEPS = 6


def _images(pipe, seeds=(0, 1)):
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        out.append(np.asarray(pipe("a photo of a cat", num_inference_steps=STEPS,
                                   generator=gen).images[0]))
    return out


def _pipeline(original, specs, variant="torch_eager/fp32"):
    base = sdopt.apply_variant(original, variant).unet.module
    module = apply_unet_techniques(base, specs, original.unet)
    pipe = with_unet(original, OptimizedUNet(module, original.unet.config, dtype=torch.float32,
                                             device=torch.device("cpu")))
    apply_pipeline_techniques(pipe, specs)
    return pipe, module


class _CallCounter:
    def __init__(self, *modules):
        self.n = 0
        self.handles = [m.register_forward_hook(self._hit) for m in modules]

    def _hit(self, *args):
        self.n += 1


@pytest.fixture(scope="module")
def original():
    return sdopt.build_preset("tiny")


@pytest.fixture(scope="module")
def reference(original):
    return _images(original)


def test_step_cache_interval_one_is_exact(original, reference):
    pipe, _ = _pipeline(original, [{"name": "step_cache", "interval": 1}])
    assert all(np.array_equal(a, b) for a, b in zip(_images(pipe), reference))


@pytest.mark.parametrize("interval", [2, 3, 5])
def test_step_cache_skips_the_deep_blocks(original, reference, interval):
    pipe, module = _pipeline(original, [{"name": "step_cache", "interval": interval}])
    unet = base_module(module).unet
    deep = _CallCounter(unet.mid_block)
    shallow = _CallCounter(unet.up_blocks[-1])
    images = _images(pipe)
    calls_per_image = shallow.n // 2
    assert calls_per_image >= STEPS
    full = sum(1 for i in range(calls_per_image) if i % interval == 0)
    assert deep.n == 2 * full < shallow.n, "the mid block runs only on full steps"
    assert module.cached_calls == shallow.n - deep.n
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 30
    assert not any(np.array_equal(r, i) for r, i in zip(reference, images))
    again = _images(pipe)
    assert all(np.array_equal(a, b) for a, b in zip(again, images)), "reset between images"


def test_step_cache_resets_on_a_new_generation_without_the_pipeline(original):
    _, module = _pipeline(original, [{"name": "step_cache", "interval": 3}])
    x = torch.randn(2, 4, 8, 8)
    ehs = torch.randn(2, 77, 32)
    first = [module(x, torch.tensor(t), ehs) for t in (900, 800, 700)]
    again = [module(x, torch.tensor(t), ehs) for t in (900, 800, 700)]  # timestep went up
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert module.full_calls == 2 and module.cached_calls == 4


def test_token_merge_attends_fewer_tokens(original, reference):
    pipe, module = _pipeline(original, [{"name": "token_merge", "ratio": 0.5}])
    assert module.unet is not original.unet, "the user's UNet is never patched"
    images = _images(pipe)
    procs = processors(module)
    assert procs
    tokens_in = sum(p.tokens_in for p in procs)
    attended = sum(p.tokens_attended for p in procs)
    assert 0.45 < attended / tokens_in < 0.55
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 30
    assert not processors(sdopt.apply_variant(original, "torch_eager/fp32").unet.module)


def test_token_merge_leaves_the_backend_module_it_is_tried_on_unchanged(original):
    """The candidates of a search share one backend module: token merging patches a copy of it
    (new module objects, the same weights), so the next candidate on that base runs without."""
    base = sdopt.apply_variant(original, "torch_eager/fp32-channels_last").unet.module
    assert base.unet is not original.unet  # a backend's own copy, not the reference
    merged = apply_unet_techniques(base, [{"name": "token_merge", "ratio": 0.5}], original.unet)
    assert processors(merged) and not processors(base)
    assert all(a is b for a, b in zip(merged.unet.parameters(), base.unet.parameters()))


def test_token_merge_at_ratio_zero_is_exact_and_merge_unmerge_round_trips(original, reference):
    pipe, _ = _pipeline(original, [{"name": "token_merge", "ratio": 0.0}])
    assert all(np.array_equal(a, b) for a, b in zip(_images(pipe), reference))
    x = torch.randn(2, 64, 8)
    merge, unmerge = bipartite_soft_matching_2d(x, 8, 8, r=16)
    merged = merge(x)
    assert merged.shape == (2, 48, 8)
    restored = unmerge(merged)
    assert restored.shape == x.shape
    kept = (restored == x).all(dim=-1).float().mean()
    assert 0.5 < float(kept) < 1.0  # merged tokens get their group's mean


def test_the_destination_choice_is_seeded_and_a_constant_for_a_tracer():
    """The same seeded draw as before it was kept (saved models merge the same tokens), and a
    graph traced after an eager call holds it as a constant, not an ``aten::randint`` with a
    generator (which OpenVINO's converter cannot convert)."""
    from sdopt.techniques.token_merge import SEED, destination_choice

    drawn = torch.randint(4, size=(4, 4, 1), generator=torch.Generator().manual_seed(SEED))
    assert torch.equal(destination_choice(4, 4, 4), drawn)

    def merged(x):
        return bipartite_soft_matching_2d(x, 8, 8, r=16)[0](x)

    x = torch.randn(2, 64, 8)
    eager = merged(x)
    traced = torch.jit.trace(merged, x, check_trace=False)
    assert "aten::randint" not in str(traced.graph)
    assert torch.equal(traced(x), eager)


def test_merging_keeps_each_groups_mean_in_torch_and_in_openvino():
    """Each merged token is its group's mean (a destination and the sources merged into it), so
    unmerging spreads values whose sum over the tokens is the input's, for every batch item;
    OpenVINO's conversion of the matching computes the same (its CPU plugin once summed an
    int64 one-hot wrongly past the first batch item)."""
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    import openvino as ov

    from sdopt.backends.openvino import convert_torch

    class RoundTrip(torch.nn.Module):
        def forward(self, x):
            merge, unmerge = bipartite_soft_matching_2d(x, 16, 16, r=128)
            return unmerge(merge(x))

    x = torch.randn(3, 256, 32, generator=torch.Generator().manual_seed(0))
    eager = RoundTrip()(x)
    assert torch.allclose(eager.sum(dim=1), x.sum(dim=1), atol=1e-3)
    assert (eager == x).all(dim=-1).float().mean() < 0.9  # tokens were merged
    compiled = ov.Core().compile_model(convert_torch(RoundTrip().eval(), x), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    converted = torch.from_numpy(compiled(x.numpy())[0])
    assert (converted - eager).abs().max() < 1e-4


def test_fewer_steps_runs_fewer_unet_calls(original, reference):
    pipe, module = _pipeline(original, [{"name": "fewer_steps", "fraction": 0.5}])
    counter = _CallCounter(base_module(module).unet)
    images = _images(pipe)
    assert counter.n == 2 * STEPS // 2
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert type(original.scheduler).__name__ == "PNDMScheduler", "the user's scheduler stays"
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 20


def test_fewer_steps_schedule_is_the_same_however_the_pipeline_was_made(tmp_path):
    """diffusers' from_config gives DPM-Solver++ the old scheduler's timestep_spacing only where
    the old config was written with it: a pipeline built in code ran linspace, the same one read
    back from disk ran leading (24.8 against 27.8 dB on sd15 at 512 px, x0.25). The searched
    spec pins the spacing; a spec saved without it keeps from_config's choice (its images do not
    change), and a bad value is refused in one line."""
    from diffusers import PNDMScheduler

    from sdopt.errors import SdoptError
    from sdopt.techniques import TECHNIQUES
    from sdopt.techniques.fewer_steps import SPACING, TECHNIQUE

    built = sdopt.build_preset("tiny")
    built.scheduler.save_pretrained(tmp_path)
    configs = {"in code": dict(built.scheduler.config),
               "from disk": dict(PNDMScheduler.from_pretrained(tmp_path).config)}

    def schedule(config, spec):
        pipe = types.SimpleNamespace(scheduler=types.SimpleNamespace(config=config))
        TECHNIQUES["fewer_steps"].apply(pipe, spec)
        pipe.scheduler.set_timesteps(20)
        return pipe.scheduler.timesteps.tolist()

    searched = [s for s in TECHNIQUE.settings if s["fraction"] == 0.25][0]
    assert searched["spacing"] == SPACING == "linspace"
    pinned = {k: schedule(c, searched) for k, c in configs.items()}
    assert pinned["in code"] == pinned["from disk"] == [999, 799, 599, 400, 200]
    old = {k: schedule(c, {"fraction": 0.25}) for k, c in configs.items()}
    assert old["in code"] == pinned["in code"] and old["from disk"][0] == 831  # leading
    TECHNIQUE.check({"fraction": 0.25}, "techniques[0]")
    with pytest.raises(SdoptError, match=r"techniques\[0\]\.spacing is 'even'"):
        TECHNIQUE.check({"fraction": 0.25, "spacing": "even"}, "techniques[0]")


@pytest.mark.parametrize("preset", ["img2img-tiny", "inpaint-tiny"])
def test_fewer_steps_with_strength_runs_at_least_one_step(preset):
    """Image-to-image and inpainting run int(steps * strength) steps: at the search's default
    strength (the pipeline's: 0.8 for img2img, 1.0 for inpainting), 0.8 and 0.3, fewer_steps
    runs that share of the schedule it set (4 of 5, not 3, at 10 steps and x0.5 for img2img),
    and never no step (x0.25 of 4 steps crashed), starting below pure noise where the strength
    asks for it (the start image is used)."""
    import inspect

    from sdopt.models import pipeline_inputs
    from sdopt.techniques.fewer_steps import FRACTIONS, steps_for

    base = sdopt.build_preset(preset)
    default = inspect.signature(type(base).__call__).parameters["strength"].default
    for strength in sorted({default, 0.8, 0.3}):
        for requested in (4, 10):
            for fraction in FRACTIONS:
                pipe = with_unet(base, base.unet)
                apply_pipeline_techniques(pipe, [{"name": "fewer_steps", "fraction": fraction}])
                timesteps = []
                hook = pipe.unet.register_forward_pre_hook(
                    lambda m, args: timesteps.append(float(args[1])))
                try:
                    pipe("a photo of a cat", **pipeline_inputs(pipe, 64, 64),
                         strength=strength, num_inference_steps=requested, output_type="np",
                         generator=torch.Generator().manual_seed(0))
                finally:
                    hook.remove()
                ran = len(timesteps)
                case = (strength, requested, fraction)
                assert ran == max(1, int(steps_for(requested, fraction) * strength)), case
                assert ran <= max(1, int(requested * strength)), case
                assert timesteps[0] < 999 * strength + 1, case


def test_vae_bf16_decodes_in_bf16(original, reference):
    pipe, _ = _pipeline(original, [{"name": "vae_bf16"}])
    seen = []
    pipe.vae.decoder.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    images = _images(pipe)
    assert seen and set(seen) == {torch.bfloat16}
    assert pipe.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    assert original.vae.decoder.conv_in.weight.dtype == torch.float32
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 35


def test_techniques_stack_on_a_reduced_precision_backend(original, reference):
    specs = [{"name": "token_merge", "ratio": 0.3}, {"name": "step_cache", "interval": 2},
             {"name": "vae_bf16"}]
    pipe, module = _pipeline(original, specs, "torch_eager/bf16")
    assert isinstance(module, StepCacheModule) and module.variant.id == "torch_eager/bf16"
    assert processors(module)
    images = _images(pipe)
    assert min(psnr_db(r, i) for r, i in zip(reference, images)) > 25


def test_compiled_backends_take_step_caching_but_not_token_merging(original):
    """A compiled UNet's blocks cannot be patched (token merging swaps attention processors);
    step caching compiles the UNet's two paths itself (test_step_cache_compiled.py)."""
    from sdopt.backends.base import Variant
    from sdopt.backends.torch_compile import CompiledModule

    class FakeDevice:
        def supports_bf16(self):
            return True, ""

    compiled = CompiledModule.__new__(CompiledModule)
    torch.nn.Module.__init__(compiled)
    compiled.variant = Variant("torch_compile", "fp32", "fp32")
    compiled.unet = original.unet
    assert "compiled graph" in unavailable_reason({"name": "token_merge", "ratio": 0.5},
                                                  compiled, FakeDevice())
    assert unavailable_reason({"name": "step_cache", "interval": 2}, compiled,
                              FakeDevice()) is None
    assert unavailable_reason({"name": "fewer_steps", "fraction": 0.5}, compiled,
                              FakeDevice()) is None


def test_registry_labels_and_manifest_validation():
    assert {s["name"] for s in all_specs()} == set(TECHNIQUES)
    assert label({"name": "step_cache", "interval": 3}) == "step_cache(every 3)"
    with pytest.raises(sdopt.SdoptError, match=r"techniques\[0\]\.interval"):
        validate_specs([{"name": "step_cache"}], "m.json")
    with pytest.raises(sdopt.SdoptError, match="techniques\\[1\\] is"):
        validate_specs([{"name": "vae_bf16"}, {"name": "pruning"}], "m.json")


@pytest.mark.parametrize("variant,specs", [
    ("torch_eager/bf16", [{"name": "step_cache", "interval": 3}, {"name": "vae_bf16"}]),
    ("torch_eager/fp32", [{"name": "token_merge", "ratio": 0.5},
                          {"name": "fewer_steps", "fraction": 0.5}]),
    ("openvino/fp32", [{"name": "step_cache", "interval": 2}]),
])
def test_saved_techniques_give_the_same_images_in_a_new_process(tmp_path, variant, specs):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "roundtrip_techniques.py"
    directory = tmp_path / "saved"
    outputs = []
    for step in ("save", "load"):
        proc = subprocess.run([sys.executable, str(script), step, str(directory), variant,
                               json.dumps(specs)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1] == specs
    first, second = np.load(f"{directory}.first.npy"), np.load(f"{directory}.second.npy")
    assert first.shape == (2, 64, 64, 3) and np.array_equal(first, second)
    plain = sdopt.build_preset("tiny")
    gen = torch.Generator().manual_seed(7)
    untouched = np.asarray(plain("a photo of a cat", num_inference_steps=6,
                                 generator=gen).images[0], dtype=np.int16)
    assert not np.array_equal(untouched, second[0]), "the techniques are active after loading"
