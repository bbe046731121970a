"""The UNet stage leaves the stages after it their share of the time budget (#17): the ordered
sd15 search's 600 s ran out in the UNet stage and never reached the VAE decoder's bf16 and
OpenVINO settings, where the exhaustive search found its per-image gain."""

import pytest

import sdopt
from sdopt.backends.base import Variant
from sdopt.device import detect
from sdopt.optimize import budget
from sdopt.optimize.budget import LaterStages
from sdopt.optimize.search import BUDGET_SPENT, planned_settings, skip_reason
from sdopt.techniques import TECHNIQUES, all_specs, params_of

from ..conftest import PROMPTS

LATER = LaterStages(settings=3, images_per_setting=3, image_s=20.0, unet_calls_per_image=20,
                    confirm_s=65.0)


def test_the_time_per_image_follows_the_unet_speedup():
    # The original: 20 calls of 0.5 s in a 20 s image, so 10 s is the rest of the pipeline.
    assert LATER.image_s_with(0.5, 0.5) == pytest.approx(20.0)
    assert LATER.image_s_with(0.5, 0.1) == pytest.approx(10.0 + 2.0)
    # A UNet share measured above the whole image (noise) still leaves the rest its 5%.
    assert LATER.image_s_with(2.0, 0.2) == pytest.approx(1.0 + 19.0 * 0.1)


def test_the_reserve_is_what_the_later_settings_need_up_to_half_the_budget():
    need = 3 * (budget.SETTING_BUILD_S + 3 * 12.0) + 65.0
    assert LATER.reserve_s(0.5, 0.1, budget_s=600) == pytest.approx(need)
    assert LATER.reserve_s(0.5, 0.1, budget_s=200) == pytest.approx(100.0)
    # A faster pick makes faster images: less to keep.
    assert LATER.reserve_s(0.5, 0.05, budget_s=600) < LATER.reserve_s(0.5, 0.1, budget_s=600)
    nothing_after = LaterStages(0, 3, 20.0, 20, confirm_s=65.0)
    assert nothing_after.reserve_s(0.5, 0.1, budget_s=600) == 65.0


def test_the_reserve_counts_the_fewest_side_by_side_rounds_beyond_their_cap():
    """Each round makes an image of the original (20 s) and one of the pick (12 s with a 5x
    UNet): three rounds take 96 s whatever the 65 s cap (sd15 at 256 px: 76 s against 45 s)."""
    rounds = LaterStages(0, 3, 20.0, 20, confirm_s=65.0, confirm_rounds=3)
    assert rounds.reserve_s(0.5, 0.1, budget_s=600) == pytest.approx(3 * (20.0 + 12.0))
    fast = LaterStages(0, 3, 2.0, 20, confirm_s=65.0, confirm_rounds=3)
    assert fast.reserve_s(0.05, 0.01, budget_s=600) == 65.0  # the cap: rounds are cheap


def test_a_candidate_past_the_unet_share_is_skipped_with_the_kept_time():
    dev = detect("cpu")
    variant = Variant("torch_eager", "fp32-channels_last", "fp32")  # runs on every CPU
    common = dict(lossless_only=False, time_budget_s=600.0)
    assert skip_reason(variant, dev, [], spent_s=450.0, reserved_s=0.0, **common) is None
    reason = skip_reason(variant, dev, [], spent_s=450.0, reserved_s=200.0, **common)
    assert reason == f"{BUDGET_SPENT} (600 s, 200 s of it kept for the stages after the " \
                     "UNet's) spent"


def test_planned_settings_count_the_runnable_ones_per_base_and_the_stacks():
    dev = detect("cpu")
    constrained = all_specs(constrained_only=True)
    runnable = [s for s in constrained
                if TECHNIQUES[s["name"]].setting_reason(params_of(s), dev) is None]
    names = {s["name"] for s in runnable}
    assert planned_settings(dev, constrained=True, bases=1) == len(runnable) + len(names) - 1
    assert planned_settings(dev, constrained=False, bases=2) > \
        2 * planned_settings(dev, constrained=True, bases=1) - len(names)


def test_the_component_stage_runs_when_the_unet_stage_would_take_the_whole_budget(
        tiny_pipe, monkeypatch):
    """With everything kept for the later stages, the UNet stage stops after the first
    candidate that beats the original (never before: until then the UNet stage is where the
    gain is), each later candidate saying so, and the component settings still run end to end."""
    monkeypatch.setattr(budget, "MAX_RESERVE_SHARE", 1.0)
    monkeypatch.setattr(budget, "SETTING_BUILD_S", 1e7)
    result = sdopt.optimize_model(
        tiny_pipe, PROMPTS, metric_drop_ths=0.05, optimization_time="constrained",
        num_inference_steps=4, repeats=2, show=False, backends=["openvino"],
        time_budget_s=1e6).sdopt_result
    unet_rows = [c for c in result.candidates if not c.pipeline_techniques]
    passed = [i for i, c in enumerate(unet_rows)
              if c.id != "torch_eager/fp32" and c.status in ("ok", "selected")]
    assert passed, [(c.id, c.status, c.reason) for c in unet_rows]
    kept = [c for c in unet_rows if "kept for the stages after the UNet's" in c.reason]
    assert kept and all(c.status == "skipped" for c in kept)
    assert all(unet_rows.index(c) > passed[0] for c in kept)
    components = [c for c in result.candidates if c.pipeline_techniques]
    ran = [c for c in components if c.status != "skipped"]
    assert ran and all(c.paired.get("base") for c in ran), [(c.id, c.reason) for c in components]
    assert any("time budget" in note for note in result.notes)


def test_the_default_budget_grows_with_the_first_stage_and_an_explicit_one_does_not(
        tiny_pipe, monkeypatch):
    """A large model's capture run alone can take minutes: the default budget is at least
    BUDGET_PER_CAPTURE times it (here made huge so that any first stage exceeds the floor)."""
    from sdopt.optimize import runner

    monkeypatch.setattr(runner, "BUDGET_PER_CAPTURE", {"constrained": 1e6, "unconstrained": 1e6})
    kwargs = dict(metric_drop_ths=0.1, backends=["torch_eager"], num_inference_steps=2,
                  repeats=1, show=False, end_to_end=False, reuse_search=False)
    default = sdopt.optimize_model(tiny_pipe, PROMPTS[:1], **kwargs).sdopt_result
    notes = [n for n in default.notes if n.startswith("time budget")]
    assert len(notes) == 1 and "the default, 1e+06x the" in notes[0], default.notes
    explicit = sdopt.optimize_model(tiny_pipe, PROMPTS[:1], time_budget_s=300, **kwargs)
    assert not any(n.startswith("time budget") for n in explicit.sdopt_result.notes)
