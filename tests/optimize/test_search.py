"""optimization_time: "unconstrained" tries the techniques end to end and may pick one;
"constrained" tries only the lower-precision ones (the VAE decoder in bf16 or compiled with
OpenVINO, the text encoders compiled with OpenVINO) and keeps one only for a
measurable gain; a zero threshold rejects every approximate technique."""

import json

import pytest

import sdopt
from sdopt.optimize.components import SETTING_MIN_ROUNDS, SETTING_ROUNDS
from sdopt.optimize.manifest import MANIFEST_NAME

from ..conftest import cpu_described

FAST = dict(num_inference_steps=4, repeats=2, show=False, backends=["torch_eager"])
PROMPTS = ["a photo of a cat"]


@pytest.fixture(scope="module")
def unconstrained():
    pipe = sdopt.build_preset("tiny")
    return pipe, sdopt.optimize_model(pipe, PROMPTS, metric_drop_ths=0.05,
                                      optimization_time="unconstrained", **FAST)


def test_unconstrained_picks_the_fastest_technique_end_to_end(unconstrained):
    _, optimized = unconstrained
    result = optimized.sdopt_result
    assert result.selected_by == "e2e_latency" and result.image_metric == "psnr"
    rows = [c for c in result.candidates if c.pipeline_techniques]
    names = {s["name"] for c in rows for s in c.pipeline_techniques}
    assert names == {"step_cache", "token_merge", "fewer_steps", "vae_bf16", "vae_openvino",
                     "vae_compiled", "text_encoder_openvino", "text_encoder_half"}
    bases = {c.id.split("+")[0] for c in rows}
    # Which backend is fastest per UNet call on a busy machine is not ours to assert: the
    # techniques are tried alone (on fp32) and on whichever backend the constrained search chose.
    plain = [c for c in result.candidates if not c.pipeline_techniques and c.latency_s
             and c.status in ("ok", "selected")]
    best_backend = min(plain, key=lambda c: c.latency_s).id
    # The base is the constrained pick: the sequential fastest, unless the side-by-side rounds
    # put a close runner-up ahead of it (then the notes say so and name it).
    overtaken = [n for n in result.notes if n.startswith("re-timed side by side (unet), ")]
    if overtaken:
        best_backend = overtaken[0].split(", ", 1)[1].split(" ", 1)[0]
    assert bases == {"torch_eager/fp32", best_backend}, "alone and on the best backend"
    assert any(len(c.pipeline_techniques) > 1 for c in rows), "passing techniques are stacked"
    measured = [c for c in result.candidates if c.e2e_latency_s and c.status in ("ok", "selected")]
    fastest = min(measured, key=lambda c: c.e2e_latency_s)
    # The search's fastest is the pick unless the side-by-side rounds put a close runner-up
    # ahead of it, which the notes say.
    assert result.selected is fastest or any("re-timed side by side (e2e)" in n
                                             for n in result.notes)
    assert result.selected.pipeline_techniques, "a technique wins on the tiny model"
    assert result.selected.image_metric_drop <= 0.05
    assert optimized.unet.info["techniques"] == result.selected.pipeline_techniques
    for c in rows:
        if c.status in ("ok", "selected", "rejected"):
            assert c.e2e_latency_s > 0 and set(c.image_metrics) >= {"psnr", "ssim"}
            assert (c.status == "rejected") == (c.image_metric_drop > 0.05)
    assert result.search_speedup == pytest.approx(result.original.e2e_latency_s
                                                  / result.selected.e2e_latency_s)
    assert result.speedup == result.selected.paired["e2e"]["speedup"]
    assert result.speedup_source == "paired"
    assert any("CLIP metrics skipped" in n for n in result.notes)
    assert json.dumps(result.to_dict())


def test_constrained_tries_only_precision_techniques(tiny_pipe):
    from sdopt.techniques import all_specs

    optimized = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, **FAST)
    result = optimized.sdopt_result
    rows = [c for c in result.candidates if c.pipeline_techniques]
    # Each component-precision setting (the bf16 VAE, the VAE and the text encoders compiled
    # with OpenVINO, CUDA's compiled VAE: skipped here with its reason) once, in turn, on the
    # settings kept so far (never two replacements of the VAE: one that replaces a kept one's
    # component is its row alone, not tried).
    constrained = all_specs(constrained_only=True)
    assert {s["name"] for s in constrained} == {"vae_bf16", "vae_openvino", "vae_compiled",
                                                 "text_encoder_openvino", "text_encoder_half"}
    assert [c.pipeline_techniques[-1] for c in rows] == constrained
    kept = []
    for row, spec in zip(rows, constrained):
        assert row.pipeline_techniques in ([spec], kept + [spec])
        if row.pipeline_techniques == kept + [spec] and row.status in ("ok", "selected") \
                and (not row.reason or row.reason.startswith("kept, and ")):
            kept = row.pipeline_techniques
        elif row.pipeline_techniques != kept + [spec]:
            # it replaces a kept setting's component (or cannot run here: that reason first)
            assert row.status == "skipped" and row.reason
    base = next(c for c in result.candidates if c.id == rows[0].id.split("+")[0])
    tried = [c for c in rows if c.status != "skipped"]
    assert tried, "at least one setting runs on this CPU (bf16 or fp32)"
    for row in rows:
        # The UNet is the base's: its per-call figures are the base's.
        assert row.latency_s == base.latency_s and row.metric_drop == base.metric_drop
        if row.status == "skipped":
            assert row.reason
        else:
            assert row.status != "failed", row.reason
            # the seconds it saves per image, timed side by side with what it is stacked on
            saving = row.paired["base"]
            # two when both decide the keeping rule (search.DECISIVE_ROUND_GAIN)
            assert saving["rounds"] in (2, *range(SETTING_MIN_ROUNDS, SETTING_ROUNDS + 1))
            assert saving["q1"] <= saving["saved_s"] <= saving["q3"]
            assert saving["reference_latency_s"] > 0 and saving["latency_s"] > 0
    picked = result.selected
    if picked in rows:
        assert result.selected_by == "e2e_latency"
        assert optimized.unet.info["techniques"] == picked.pipeline_techniques
        # every setting of the pick saved its share of what it was stacked on
        assert all(c.paired["base"]["saved_s"] > 0 for c in rows
                   if c.pipeline_techniques == picked.pipeline_techniques[:len(
                       c.pipeline_techniques)] and c.status != "skipped")
        # its images were made and judged in the side-by-side rounds with the original
        assert {"psnr", "ssim"} <= set(picked.image_metrics)
        assert len(picked.e2e_latency_samples_s) == picked.paired["e2e"]["rounds"]
    else:
        assert result.selected_by == "unet_latency" and not optimized.unet.info["techniques"]
        assert all(c.status in ("rejected", "skipped") or c.reason for c in rows), \
            "a passing, faster lower precision must be picked"
    # the summary still gains images metrics and an end-to-end latency for the chosen one
    assert result.original.e2e_latency_s and result.selected.e2e_latency_s
    assert "psnr" in result.selected.image_metrics


def test_constrained_lossless_only_skips_the_precision_technique(tiny_pipe):
    from sdopt.techniques import all_specs

    result = sdopt.optimize_model(tiny_pipe, PROMPTS, **FAST).sdopt_result
    rows = [c for c in result.candidates if c.pipeline_techniques]
    assert len(rows) == len(all_specs(constrained_only=True))
    assert all(c.status == "skipped" for c in rows)
    # Settings this CPU cannot run say so; the others are lossy, hence not tried.
    assert any(c.reason.startswith("lower precision and metric_drop_ths is None") for c in rows)
    assert not result.selected.pipeline_techniques


def _rows(saved_s: float, q1_s: float | None = None):
    """A constrained technique phase over a base whose image is estimated at 10 s, where every
    setting saves ``saved_s`` per image side by side (first quartile ``q1_s``, else the same);
    ``evaluate`` stands in for the replays of its component's calls (here only the keeping
    rule is under test)."""
    from sdopt.optimize.search import CandidateResult, OptimizationResult, run_technique_search
    from sdopt.techniques import TECHNIQUES

    base = CandidateResult("openvino/int8", "openvino", "int8", "int8", [], "selected",
                           latency_s=0.5, metric_drop=0.03)
    result = OptimizationResult({}, "numeric_precision", 0.05, "constrained", {}, [base], base,
                                base)
    fp32_s = {"vae": 2.5, "text_encoder": 0.5}  # with 7 s of UNet calls: 10 s per image

    def evaluate(module, specs, row, alongside, decisive_s=None):
        # decided in two rounds by a saving of 5% of the stack's image (10 s, 9.5 s once the
        # first setting saved 0.5 s... whichever stack it is timed on)
        assert decisive_s is not None and 0.4 < decisive_s <= 0.5
        before = fp32_s[TECHNIQUES[specs[-1]["name"]].component]
        row.paired["base"] = {"saved_s": saved_s, "q1": saved_s if q1_s is None else q1_s,
                              "q3": saved_s, "rounds": 3, "latency_s": before - saved_s,
                              "reference_latency_s": before}

    ranked = run_technique_search(result, [(base, object())], cpu_described(bf16=True),
                                  metric_drop_ths=0.05, image_metric="psnr", evaluate=evaluate,
                                  constrained=True, unet_image_s=7.0, component_s=fp32_s)
    tried = next(c for c in result.candidates if c.pipeline_techniques
                 and c.pipeline_techniques[0]["name"] == "vae_openvino")  # the first tried
    # The two VAE replacements are never stacked (the second would replace the first).
    assert not any(len({s["name"] for s in c.pipeline_techniques} & {"vae_bf16", "vae_openvino"})
                   > 1 for c in result.candidates)
    return ranked, tried


@pytest.mark.parametrize("saved_s, q1_s, kept", [
    (2.0, None, True),     # 20% of the image side by side: kept
    (0.2, None, True),     # 2% (the sd15 text encoder's share at 256 px), in most rounds: kept
    (0.05, None, False),   # 0.5%: less than the image's 1%, the base stays, with the reason
    (0.5, -0.1, False),    # 5% in the median, but not in most rounds: noise
    (-0.5, None, False),   # slower
])
def test_constrained_precision_must_pay_for_itself(saved_s, q1_s, kept):
    """The settings are kept in turn when each saves CONSTRAINED_MIN_GAIN of what it is stacked
    on, in most rounds; the kept stacks come back most settings first, the base last (the
    runner judges the first on its images and falls back along the list)."""
    ranked, tried = _rows(saved_s, q1_s)
    (row, specs), base = ranked[0], ranked[-1][0]
    assert bool(specs) is kept and row.pipeline_techniques == specs
    assert base.id == "openvino/int8" and not ranked[-1][1]
    assert tried.status == "ok"
    if kept:
        assert len(ranked) == 1 + len(specs) and not tried.reason
        # each stack is its predecessor plus one setting
        assert [len(s) for _, s in ranked] == list(range(len(specs), -1, -1))
    else:
        assert ranked == [(base, [])]
        assert tried.reason.startswith(f"saves {saved_s:.3f} s per image (side by side with "
                                       "openvino/int8, 3 rounds of one image's vae calls, "
                                       f"{saved_s / 10:.1%} of its estimated 10.00 s per image)")
        if (saved_s if q1_s is None else q1_s) <= 0:
            assert "but not in most rounds (first quartile" in tried.reason
            assert "must save time in three rounds of four" in tried.reason
        else:
            assert "less than the 1% gain that a lower precision must buy" in tried.reason


def test_zero_threshold_rejects_every_technique(tiny_pipe):
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.0,
                                  optimization_time="unconstrained", **FAST).sdopt_result
    from sdopt.techniques import TECHNIQUES

    rows = [c for c in result.candidates if c.pipeline_techniques]
    assert rows and any(c.status == "rejected" for c in rows)
    for c in rows:
        if c.status in ("rejected", "skipped"):
            continue
        # Only a component moved to another runtime in fp32 (OpenVINO's fp32 VAE decoder or
        # text encoder, tried on CPUs without bf16) passes, and only with identical images.
        assert all(TECHNIQUES[s["name"]].constrained and s.get("precision") == "fp32"
                   for s in c.pipeline_techniques), c
        assert c.image_metrics["psnr"]["max"] == 0.0, c
    assert all(TECHNIQUES[s["name"]].constrained for s in result.selected.pipeline_techniques)


def test_lossless_only_skips_techniques_with_the_reason(tiny_pipe):
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, optimization_time="unconstrained",
                                  **FAST).sdopt_result
    from sdopt.device import detect
    from sdopt.techniques import unavailable_reason

    rows = [c for c in result.candidates if c.pipeline_techniques]
    assert rows and all(c.status == "skipped" for c in rows)
    # Lossless only, unless the setting cannot run here at all (an OpenVINO fp32 component on
    # a CPU with bf16 units): that reason comes first.
    assert all("lossless only" in c.reason or c.reason == unavailable_reason(
        c.pipeline_techniques[0], None, detect("cpu")) for c in rows)
    assert any("lossless only" in c.reason for c in rows)
    assert result.selected.precision == "fp32" and not result.selected.pipeline_techniques


def test_image_metric_judges_backends_on_images(tiny_pipe):
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric="ssim", metric_drop_ths=0.05,
                                  **FAST).sdopt_result
    assert result.image_metric == "ssim"
    for c in result.candidates:
        if c.status not in ("ok", "selected", "rejected"):
            continue
        assert c.metric_drop is not None
        if c.pipeline_techniques and c.status == "ok" and c.image_metric_drop is None:
            # a component setting timed on its component and not the pick: no images of its
            # own (only the stack kept last makes them, in the final rounds), and it says why
            assert c.paired["base"] and c.reason, c
        else:
            assert c.image_metric_drop is not None


def test_bad_image_metric_arguments(tiny_pipe):
    with pytest.raises(sdopt.SdoptError, match="image_metric 'numeric_precision'"):
        sdopt.optimize_model(tiny_pipe, PROMPTS, image_metric="numeric_precision", **FAST)
    with pytest.raises(sdopt.SdoptError, match="end_to_end=False"):
        sdopt.optimize_model(tiny_pipe, PROMPTS, optimization_time="unconstrained",
                             end_to_end=False, **FAST)


def test_saved_techniques_are_recorded_and_restored(unconstrained, tmp_path):
    from sdopt.optimize.optimized import OptimizedUNet

    _, optimized = unconstrained
    target = tmp_path / "m"
    sdopt.save_model(optimized, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["techniques"] == optimized.sdopt_result.selected.pipeline_techniques
    assert manifest["metrics"]["e2e_latency_s"] > 0
    fresh = sdopt.build_preset("tiny")
    loaded = sdopt.load_model(target, pipe=fresh)
    assert isinstance(loaded.unet, OptimizedUNet)
    assert loaded.unet.info["techniques"] == manifest["techniques"]
    manifest["techniques"] = [{"name": "warp_drive"}]
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(sdopt.SdoptError, match=r"techniques\[0\]"):
        sdopt.load_model(target, pipe=sdopt.build_preset("tiny"))


def _searching_on(monkeypatch, flags):
    """The search sees this machine's CPU with these flags instead of its own: the variants and
    bounds that depend on VNNI are tested on every CPU (the kernels still run on this one)."""
    import dataclasses

    from sdopt.device import detect
    from sdopt.optimize import request

    cpu = dataclasses.replace(detect("cpu"), cpu_flags=flags)
    monkeypatch.setattr(request, "detect", lambda device=None: cpu)


VNNI = ("avx2", "avx512f", "avx512_vnni")


def test_partial_int8_fallbacks_run_only_when_full_int8_is_rejected(tiny_pipe, monkeypatch):
    pytest.importorskip("nncf", reason="OpenVINO int8 needs nncf")
    _searching_on(monkeypatch, VNNI)
    loose = sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=1.0, backends=["openvino"],
                                 num_inference_steps=2, show=False, end_to_end=False,
                                 reuse_search=False)
    rows = {c.id: c for c in loose.sdopt_result.candidates}
    assert rows["openvino/int8-minmax"].status in ("ok", "selected")
    for fallback in ("openvino/int8-inner-minmax", "openvino/int8-inner", "openvino/int8-matmul",
                     "openvino/int8-conv", "openvino/int8-weights"):
        assert rows[fallback].status == "skipped"
        assert "openvino/int8-minmax already passed" in rows[fallback].reason
    # NNCF's calibration of the same layers cannot be faster than its min/max twin
    assert rows["openvino/int8"].status == "skipped"
    assert rows["openvino/int8"].reason == (
        "openvino/int8-minmax already passed the threshold; another calibration of the same "
        "int8 layers changes the error, not the speed")
    tight = sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=1e-4, backends=["openvino"],
                                 num_inference_steps=2, show=False, end_to_end=False,
                                 reuse_search=False)
    rows = {c.id: c for c in tight.sdopt_result.candidates}
    assert rows["openvino/int8-minmax"].status == "rejected"
    for fallback in ("openvino/int8-inner-minmax", "openvino/int8", "openvino/int8-inner",
                     "openvino/int8-matmul", "openvino/int8-conv", "openvino/int8-weights"):
        assert rows[fallback].status in ("ok", "rejected", "selected"), rows[fallback].reason
        assert rows[fallback].metric_drop is not None


def test_without_vnni_the_convolution_int8_bounds_the_other_int8_variants(tiny_pipe,
                                                                          monkeypatch):
    """On a CPU without VNNI the convolution-only int8 is tried first; once it passed, its NNCF
    twin is not calibrated, the int8 variants that also quantize MatMuls and attention (slower
    there) are skipped by their bound, and the fallbacks by it."""
    pytest.importorskip("nncf", reason="OpenVINO int8 needs nncf")
    _searching_on(monkeypatch, ("avx2",))
    loose = sdopt.optimize_model(tiny_pipe, ["a cat"], metric_drop_ths=1.0, backends=["openvino"],
                                 num_inference_steps=2, show=False, end_to_end=False,
                                 reuse_search=False)
    rows = {c.id: c for c in loose.sdopt_result.candidates}
    conv = rows["openvino/int8-conv-minmax"]
    assert conv.status in ("ok", "selected"), conv.reason
    assert rows["openvino/int8-conv-nncf"].status == "skipped"
    assert "openvino/int8-conv-minmax already passed" in rows["openvino/int8-conv-nncf"].reason
    for more in ("openvino/int8-minmax", "openvino/int8-inner-minmax", "openvino/int8",
                 "openvino/int8-inner"):
        assert rows[more].status == "skipped", (more, rows[more].reason)
        # tried right after it (the highest priors), when it was the best so far
        assert "cannot beat openvino/int8-conv-minmax" in rows[more].reason
        assert "without VNNI int8 MatMuls and attention ran slower" in rows[more].reason
    for fallback in ("openvino/int8-matmul", "openvino/int8-conv", "openvino/int8-weights"):
        assert rows[fallback].status == "skipped"
        assert "already passed" in rows[fallback].reason


@pytest.fixture(scope="module")
def constrained_search(tiny_pipe):
    """A constrained search with end-to-end images whose pick is not the original (OpenVINO's
    int8 and bf16 run the tiny UNet at 2-4x fp32 eager, where torch's bf16 was within the noise
    of fp32), with the warmup generations and the image runs it made."""
    from sdopt.optimize.endtoend import EndToEnd

    warmed, runs = [], []
    warmup, run = EndToEnd.warmup, EndToEnd.run

    def spy_run(self, pipe, done=None, **kwargs):
        runs.append(done is not None)
        return run(self, pipe, done, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EndToEnd, "warmup", lambda self, pipe: (warmed.append(pipe),
                                                              warmup(self, pipe))[1])
        patch.setattr(EndToEnd, "run", spy_run)
        result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, end_to_end=True,
                                      **{**FAST, "backends": ["openvino"]}).sdopt_result
    settings = [c for c in result.candidates if c.pipeline_techniques and c.paired.get("base")]
    assert settings, "no component setting was tried: the tests check nothing"
    base = next(c for c in result.candidates if c.id == settings[0].id.split("+")[0])
    assert base is not result.original, "the original was the pick: the tests check nothing"
    return result, settings, base, warmed, runs


def test_a_constrained_search_makes_no_warmup_generation(tiny_pipe, constrained_search):
    """The capture (the original's images) needs none, the pick's UNet was timed, and a
    component setting's short generations start with an untimed one of each pipeline: no
    pipeline gets a warmup generation of its own."""
    result, settings, base, warmed, _ = constrained_search
    assert warmed == []
    # The pick's UNet is compared side by side with the original's: in rounds of its own when a
    # close runner-up had to be decided per call (a component setting then carries its base's
    # figure), else in the image rounds.
    assert result.selected.paired.get("unet")
    if base.paired.get("unet"):
        assert all(row.paired["unet"] == base.paired["unet"] for row in settings)


def test_a_constrained_pick_is_scored_in_the_side_by_side_rounds(constrained_search):
    """The pick's images and time per image come from the rounds that time it alongside the
    original: no image run of its own, none for the settings (their short generations time
    them), and the stacks it was built on have no images, saying why."""
    result, settings, base, _, runs = constrained_search
    pick = result.selected
    assert runs == [True]  # the original's run is the capture's
    assert pick.image_metrics and pick.e2e_latency_s
    assert len(pick.e2e_latency_samples_s) == pick.paired["e2e"]["rounds"]
    assert pick.e2e_latency_s == pytest.approx(pick.paired["e2e"]["latency_s"], rel=0.25)
    under = [c for c in [base] + settings if c is not pick and c.status == "ok"
             and pick.id.startswith(c.id + "+")]
    assert all(c.e2e_latency_s is None and c.reason.startswith(f"kept, and {pick.id} stacked")
               for c in under)


def test_a_stack_whose_images_fail_falls_back_to_the_stack_before_it(tiny_pipe, monkeypatch):
    """The kept stack is judged on every prompt's image in the side-by-side rounds; over the
    threshold it is rejected with the reason and the stack kept before it is re-timed and
    judged, down to the UNet pick alone (judged by its UNet calls)."""
    from sdopt.optimize import runner
    from sdopt.techniques import vae_openvino

    forward = vae_openvino.OpenVINODecoder.forward
    # A decoder that gets every image wrong: each stack with it fails
    monkeypatch.setattr(vae_openvino.OpenVINODecoder, "forward",
                        lambda self, sample, latent_embeds=None:
                        forward(self, sample, latent_embeds) * 0.0)
    real_saving = runner.setting_saving

    def vae_pays(calls, component, *args, **kwargs):
        """The OpenVINO VAE is kept whatever its timing: whether it pays on the tiny model
        depends on the machine's load (in a full test run it once did not, and no stack with it
        was judged); what follows its keeping is this test's subject."""
        out = dict(real_saving(calls, component, *args, **kwargs))
        if component == "vae":
            saved = max(out["saved_s"], 0.5 * out["reference_latency_s"])
            out.update(saved_s=saved, q1=max(out["q1"], 0.25 * out["reference_latency_s"]),
                       q3=max(out["q3"], saved), latency_s=out["reference_latency_s"] - saved)
        return out

    monkeypatch.setattr(runner, "setting_saving", vae_pays)
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, end_to_end=True,
                                  **{**FAST, "backends": ["openvino"]}).sdopt_result
    stacks = [c for c in result.candidates
              if any(s["name"] == "vae_openvino" for s in c.pipeline_techniques)
              and c.status != "skipped"]
    assert stacks, [(c.id, c.reason) for c in result.candidates if c.pipeline_techniques]
    judged = [c for c in stacks if c.image_metrics]
    assert judged and all(c.status == "rejected" and c.reason.endswith("(images)")
                          for c in judged)
    pick = result.selected
    assert "vae_ov" not in pick.id and pick.image_metrics and pick.paired["e2e"]
    assert pick.e2e_latency_s and result.speedup == pick.paired[result.level]["speedup"]


def test_a_constrained_pick_without_a_setting_is_scored_alone(tiny_pipe, monkeypatch):
    """No component setting ran (every one unavailable here): the pick is measured on its own."""
    from sdopt.optimize import search as search_module

    monkeypatch.setattr(search_module, "technique_unavailable",
                        lambda spec, module, device: "unavailable in this test")
    result = sdopt.optimize_model(tiny_pipe, PROMPTS, metric_drop_ths=0.05, end_to_end=True,
                                  **{**FAST, "backends": ["openvino"]}).sdopt_result
    assert result.selected is not result.original
    assert result.selected.e2e_latency_s and result.selected.image_metrics
    assert all(c.status == "skipped" for c in result.candidates if c.pipeline_techniques)


def test_a_constrained_picks_unet_is_compared_in_the_image_rounds(tiny_pipe, monkeypatch):
    """Without a runner-up to decide per UNet call, a constrained search with images times the
    pick's UNet calls inside the side-by-side image rounds (no rounds of UNet calls of their
    own), and the original's per-call latency is the capture's (its UNet is not timed again)."""
    from sdopt.optimize import runner, search as search_module
    from sdopt.optimize.summary import summary_table

    levels, timed = [], []
    confirm, time_module = runner.confirm, search_module._time_module
    monkeypatch.setattr(runner, "confirm", lambda *a, **k: (levels.append(k["level"]),
                                                            confirm(*a, **k))[1])
    monkeypatch.setattr(search_module, "_time_module",
                        lambda module, *a, **k: (timed.append(module), time_module(module, *a,
                                                                                     **k))[1])
    from sdopt.device import detect

    prompts = PROMPTS + ["a watercolor of a harbour"]
    # a UNet candidate that runs on this CPU (bf16 is skipped on CPUs without bf16 units)
    backend = "openvino/bf16" if detect("cpu").supports_bf16()[0] else "openvino/fp32"
    result = sdopt.optimize_model(tiny_pipe, prompts, metric_drop_ths=0.05, end_to_end=True,
                                  **{**FAST, "backends": [backend]}).sdopt_result
    assert result.selected is not result.original, "the original was the pick: nothing checked"
    assert levels == ["e2e"]
    unet, e2e = result.selected.paired["unet"], result.selected.paired["e2e"]
    assert unet["in_image_rounds"] and unet["rounds"] == e2e["rounds"] >= 3
    assert unet["q1"] <= unet["speedup"] <= unet["q3"] and unet["reference_latency_s"] > 0
    assert result.speedup == result.selected.paired[result.level]["speedup"]
    from rich.console import Console

    console = Console(width=400, record=True, file=open("/dev/null", "w"))
    console.print(summary_table(result))
    assert "side by side in the image rounds" in console.export_text()
    # one module timed: the candidate's; the original's calls are the second prompt's capture
    assert len(timed) == 1
    calls = result.samples["captured_calls"] // len(prompts)
    assert len(result.original.latency_samples_s) == calls


def test_a_setting_that_cannot_pay_for_itself_is_not_tried():
    """With each component's fp32 time per image (the capture's), a constrained setting whose
    component is too small a share of its base's image is skipped with the reason, and torch's
    bf16 VAE decoder once OpenVINO's measured (it cannot beat it; here OpenVINO's did not pay
    for itself, so the base stays and nothing is stacked); the OpenVINO VAE is tried."""
    from sdopt.optimize.search import CandidateResult, OptimizationResult, run_technique_search

    base = CandidateResult("openvino/int8", "openvino", "int8", "int8", [], "selected",
                           latency_s=0.5, metric_drop=0.03)
    result = OptimizationResult({}, "numeric_precision", 0.05, "constrained", {}, [base], base,
                                base)
    evaluated = []

    def evaluate(module, specs, row, alongside, decisive_s=None):  # stands in for the replays
        evaluated.append(row.id)
        row.paired["base"] = {"saved_s": 0.05, "q1": 0.05, "q3": 0.05, "rounds": 3,
                              "latency_s": 2.95, "reference_latency_s": 3.0}

    ranked = run_technique_search(result, [(base, object())], cpu_described(bf16=True),
                                  metric_drop_ths=0.05, image_metric="psnr", evaluate=evaluate,
                                  constrained=True, unet_image_s=6.8,
                                  component_s={"text_encoder": 0.05, "vae": 3.0})
    rows = {c.id.rsplit("+", 1)[1]: c for c in result.candidates if c.pipeline_techniques}
    assert evaluated == [rows["vae_ov_bf16"].id]
    assert rows["te_ov_bf16"].status == "skipped"
    assert "even free it would save 0.5%, less than the 1%" in rows["te_ov_bf16"].reason
    assert rows["vae_bf16"].status == "skipped"
    assert rows["vae_bf16"].reason.startswith(f"cannot beat {rows['vae_ov_bf16'].id}")
    assert "less than the 1% gain" in rows["vae_ov_bf16"].reason
    assert ranked[0][0] is base
