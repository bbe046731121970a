"""Image inputs of image-to-image and inpainting pipelines (#18): ``input_data`` takes
``(prompt, image)`` pairs and ``(prompt, image, mask_image)`` triples as well as plain prompts
(which get the default start image and mask), checked with one-line errors, and the given images
reach every pipeline call of the search (capture and end-to-end judging), the CLI, and a saved
model that loads in a new process and makes the same image."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdopt
from sdopt.cli.optimize import attach_images, read_prompts
from sdopt.errors import SdoptError
from sdopt.optimize.capture import collect_samples
from sdopt.optimize.inputs import PromptInput, check_input_data, image_sha256
from sdopt.optimize.request import build_request

SCRIPT = Path(__file__).parents[1] / "scripts" / "roundtrip_images.py"


@pytest.fixture(scope="module")
def img2img():
    return sdopt.build_preset("img2img-tiny")


@pytest.fixture(scope="module")
def inpaint():
    return sdopt.build_preset("inpaint-tiny")


def stripes(h=64, w=64) -> np.ndarray:
    x = np.arange(w)[None, :, None].repeat(h, 0)
    return np.concatenate([(x // 4 % 2) * 255, (1 - x // 4 % 2) * 255, x * 0 + 128],
                          -1).astype(np.uint8)


def test_pairs_triples_dicts_and_plain_prompts(img2img, inpaint, tmp_path):
    path = tmp_path / "start.png"
    Image.fromarray(stripes()).save(path)
    got = check_input_data(["a cat", ("a dog", stripes()), {"prompt": "a fox", "image": path},
                            ("a cow", torch.rand(64, 64, 3))], img2img)
    assert [g.prompt for g in got] == ["a cat", "a dog", "a fox", "a cow"]
    assert got[0].image is None  # the default start image
    assert got[1].image.mode == "RGB" and np.array_equal(np.asarray(got[1].image), stripes())
    assert np.array_equal(np.asarray(got[2].image), stripes())
    mask = np.zeros((64, 64), dtype=bool)
    mask[:32] = True
    got = check_input_data([("a cat", stripes(), mask), ("a dog", stripes()), "a fox"], inpaint)
    assert got[0].mask_image.mode == "L" and np.asarray(got[0].mask_image)[:32].min() == 255
    assert got[1].mask_image is None and got[2].image is None  # defaults


@pytest.mark.parametrize("data,preset,expected", [
    ([("a cat", stripes())], "tiny",
     "input_data[0] gives an image, but StableDiffusionPipeline takes none: expected a prompt "
     "string"),
    ([("a cat", stripes(), stripes()[..., 0])], "img2img-tiny",
     "input_data[0] gives a mask_image, but StableDiffusionImg2ImgPipeline takes none: expected "
     "a prompt or a (prompt, image) pair"),
    ([("a cat", 3)], "img2img-tiny",
     "input_data[0] image is a int: expected a PIL image, an H x W x 3 array or an image file "
     "path"),
    ([("a cat", "missing.png")], "img2img-tiny",
     "input_data[0] image 'missing.png' is not a file: expected a PIL image, an H x W x 3 array "
     "or an image file path"),
    ([("a cat", stripes(), np.ones((8, 8, 2)))], "inpaint-tiny",
     "input_data[0] mask_image is an array of shape (8, 8, 2): expected H x W"),
    (["a cat", (1, stripes())], "img2img-tiny",
     "input_data[1]'s prompt is a int: expected a prompt or a (prompt, image) pair, with a "
     "non-empty prompt string"),
    ([("a", "b", "c", "d")], "inpaint-tiny",
     "input_data[0] has 4 items: expected a prompt, a (prompt, image) pair or a (prompt, image, "
     "mask_image) triple"),
    ([("a cat", np.full((8, 8, 3), 2.0))], "img2img-tiny",
     "input_data[0] image has values outside [0, 1]: expected uint8 pixels or floats from 0 to 1"),
    ([{"prompt": "a cat", "img": 1}], "img2img-tiny",
     "input_data[0] has keys ['img', 'prompt']: expected 'prompt' and optionally 'image' and "
     "'mask_image'"),
    (7, "inpaint-tiny", "input_data is a int: expected a list of prompts (each a prompt, a "
     "(prompt, image) pair or a (prompt, image, mask_image) triple)"),
])
def test_bad_input_data_is_one_line_naming_what_is_expected(data, preset, expected, request):
    pipe = request.getfixturevalue({"tiny": "tiny_pipe", "img2img-tiny": "img2img",
                                    "inpaint-tiny": "inpaint"}[preset])
    with pytest.raises(SdoptError) as err:
        check_input_data(data, pipe)
    assert str(err.value) == expected


def _request(pipe, data, **kwargs):
    args = dict(metric_drop_ths=0.05, metric_aggregate="max", metric=None,
                optimization_time="constrained", dynamic_info=None, config_file=None,
                ignore_compilers=None, ignore_compressors=None, device="cpu",
                backends=["torch_eager"], height=None, width=None, num_inference_steps=2,
                guidance_scale=7.5, seed=0, n_verify=2, repeats=1, time_budget_s=None,
                image_metric="psnr", end_to_end=None, reuse_search=True)
    args.update(kwargs)
    return build_request(pipe, data, **args)


def test_the_size_comes_from_the_first_image_and_every_image_is_fitted_to_it(img2img):
    req = _request(img2img, [("a cat", stripes(83, 50)), ("a dog", stripes(64, 64)), "a fox"])
    assert (req.height, req.width) == (80, 48)  # rounded down to multiples of 8
    assert [i.image.size if i.image else None for i in req.inputs] == [(48, 80), (48, 80), None]
    assert req.prompts == ["a cat", "a dog", "a fox"]
    # Given sizes win over the image's.
    req = _request(img2img, [("a cat", stripes(83, 50))], height=64, width=64)
    assert req.inputs[0].image.size == (64, 64)
    # The decision cache keys on the images' pixels; plain prompts keep their key.
    plain = _request(img2img, ["a cat"]).settings()
    assert "images" not in plain
    one = _request(img2img, [("a cat", stripes())]).settings()
    other = _request(img2img, [("a cat", 255 - stripes())]).settings()
    assert one["images"] != other["images"] and one["prompts"] == plain["prompts"]


def test_capture_records_calls_made_from_the_given_image(img2img):
    kwargs = dict(height=64, width=64, steps=2, guidance_scale=7.5, seed=0, n_verify=1)
    default = collect_samples(img2img, ["a cat"], **kwargs)
    given = collect_samples(img2img, [PromptInput("a cat", Image.fromarray(stripes()))],
                            **kwargs)
    # img2img's first latent is the encoded start image, noised: another image, another input.
    assert not torch.allclose(default.samples[0].inputs.sample, given.samples[0].inputs.sample)


@pytest.mark.parametrize("preset", ["img2img-tiny", "inpaint-tiny"])
def test_every_pipeline_call_of_the_search_gets_the_given_images(preset, monkeypatch):
    pipe = sdopt.build_preset(preset)
    cls = type(pipe)
    original_call, seen = cls.__call__, []

    @functools.wraps(original_call)  # the signature sdopt reads (which inputs the call takes)
    def spy(self, prompt=None, *args, **kwargs):
        seen.append((prompt, np.asarray(kwargs.get("image")).copy(),
                     None if kwargs.get("mask_image") is None
                     else np.asarray(kwargs["mask_image"]).copy()))
        return original_call(self, prompt, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :20] = 255
    data = [("a cat", stripes(), mask) if preset.startswith("inpaint") else ("a cat", stripes()),
            "a dog"]
    optimized = sdopt.optimize_model(pipe, data, metric_drop_ths=0.05,
                                     backends=["torch_eager"], num_inference_steps=2,
                                     repeats=1, show=False, reuse_search=False)
    assert optimized.sdopt_result.end_to_end["prompts"] == 2
    cats = [s for s in seen if s[0] == "a cat"]
    dogs = [s for s in seen if s[0] == "a dog"]
    # Capture, the original's images, every candidate's images: all from the given image.
    assert len(cats) >= 3 and dogs
    assert all(np.array_equal(image, stripes()) for _, image, _ in cats)
    default = np.asarray(sdopt.models.default_image(64, 64))
    assert all(np.array_equal(image, default) for _, image, _ in dogs)
    if preset.startswith("inpaint"):
        assert all(np.array_equal(m, mask) for _, _, m in cats)
        assert all(np.array_equal(m, np.asarray(sdopt.models.default_mask(64, 64)))
                   for _, _, m in dogs)


def test_a_saved_model_records_the_start_images_and_masks_it_was_judged_on(img2img, tmp_path):
    """#18: the manifest's search keeps the sha256 of each prompt's start image and mask (the
    pixels the pipeline got, after fitting; None for sdopt's default), named and computed as
    results.json's config records them, so a saved model says which pictures picked it."""
    from sdopt.gate.results import IMAGE_HASH_KEYS
    from sdopt.optimize.inputs import MASK_IMAGE_HASH, START_IMAGE_HASH, fit
    from sdopt.optimize.manifest import MANIFEST_NAME
    from sdopt.optimize.table import OptimizationResult

    assert tuple(IMAGE_HASH_KEYS) == (START_IMAGE_HASH, MASK_IMAGE_HASH)
    optimized = sdopt.optimize_model(img2img, [("a cat", stripes(72, 64)), "a dog"],
                                     metric_drop_ths=0.05, height=64, width=64,
                                     backends=["torch_eager/fp32-channels_last"],
                                     num_inference_steps=2, repeats=1, end_to_end=False,
                                     show=False, reuse_search=False)
    fitted = fit([PromptInput("a cat", Image.fromarray(stripes(72, 64)))], 64, 64)[0].image
    expected = {START_IMAGE_HASH: [image_sha256(fitted), None], MASK_IMAGE_HASH: [None, None]}
    assert optimized.sdopt_result.input_images == expected
    manifest = json.loads((sdopt.save_model(optimized, tmp_path / "m") / MANIFEST_NAME)
                          .read_text())
    assert manifest["search"]["input_images"] == expected
    assert OptimizationResult.from_dict(manifest["search"]).input_images == expected
    # A result written before the field existed reads as "none recorded".
    del manifest["search"]["input_images"]
    assert OptimizationResult.from_dict(manifest["search"]).input_images == {}


def _run(*args) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", ["img2img-tiny", "inpaint-tiny"])
def test_optimized_with_image_inputs_round_trips_in_a_new_process(tmp_path, preset):
    directory = tmp_path / "saved"
    saved = _run("save", directory, preset)
    loaded = _run("load", directory, preset)
    assert loaded["variant"] == saved["variant"]
    assert saved["samples"]["sample_shape"][-2:] == [32, 32]  # 64 px through the tiny VAE (2x)
    assert saved["end_to_end"]["prompts"] == 2
    assert not [r for r, (status, _) in saved["rows"].items() if status == "failed"]
    first = np.load(f"{directory}.first.npy")
    second = np.load(f"{directory}.second.npy")
    assert first.shape == (64, 64, 3) and first.std() > 0
    assert np.array_equal(first, second)
    # The pick is within the threshold of the original on the user's own start image.
    original = np.load(f"{directory}.save-original.npy")
    mse = float(np.mean((first.astype(np.float64) - original) ** 2))
    assert mse == 0 or 10 * np.log10(255 ** 2 / mse) > 25


def test_cli_pairs_images_with_prompts(tmp_path):
    entries = attach_images(["a", "b"], ("x.png",), ())
    assert entries == [{"prompt": "a", "image": "x.png"}, {"prompt": "b", "image": "x.png"}]
    entries = attach_images(["a", "b"], ("x.png", "y.png"), ("m.png",))
    assert [(e["image"], e["mask_image"]) for e in entries] == [("x.png", "m.png"),
                                                                ("y.png", "m.png")]
    assert attach_images(["a"], (), ()) == ["a"]
    with pytest.raises(SdoptError,
                       match=r"--start-image given 2 times for 3 prompts: expected once"):
        attach_images(["a", "b", "c"], ("x", "y"), ())
    with pytest.raises(SdoptError, match="--mask-image given without --start-image"):
        attach_images(["a"], (), ("m",))
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(["a cat", {"prompt": "a dog", "image": "dog.png",
                                                  "mask_image": "/abs/mask.png"}]))
    assert read_prompts((), str(prompts_file)) == [
        "a cat", {"prompt": "a dog", "image": str(tmp_path / "dog.png"),
                  "mask_image": "/abs/mask.png"}]


def test_cli_refuses_an_image_for_a_text_to_image_model(tmp_path):
    from click.testing import CliRunner

    from sdopt.cli import main

    Image.fromarray(stripes()).save(tmp_path / "start.png")
    result = CliRunner().invoke(main, ["optimize", "--model", "tiny", "--prompt", "a cat",
                                       "--start-image", str(tmp_path / "start.png"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "input_data[0] gives an image, but StableDiffusionPipeline takes none" in \
        result.output


def test_cli_optimizes_from_a_prompts_file_with_start_images(tmp_path):
    from click.testing import CliRunner

    from sdopt.cli import main

    Image.fromarray(stripes(48, 40)).save(tmp_path / "start.png")
    (tmp_path / "prompts.json").write_text(json.dumps(
        [{"prompt": "a cat", "image": "start.png"}, "a dog"]))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "optimize", "--model", "img2img-tiny", "--prompts", str(tmp_path / "prompts.json"),
        "--out", str(out), "--backend", "torch_eager", "--steps", "2", "--repeats", "1",
        "--fresh-search"])
    assert result.exit_code == 0, result.output[-2000:]
    saved = json.loads((out / "optimization.json").read_text())
    # The search ran at the start image's size (48 x 40), not the preset's 64 px default.
    assert (saved["samples"]["height"], saved["samples"]["width"]) == (48, 40)
    assert saved["end_to_end"]["prompts"] == 2


def test_an_images_hash_is_of_its_pixels_not_of_its_file(tmp_path, img2img):
    """The hash results.json records for a start image: the same picture from another file
    (other compression, metadata) or from an array hashes the same; one pixel, the size or the
    mode changes it. The decision cache's key uses the same hash, shortened."""
    pixels = stripes(48, 40)
    Image.fromarray(pixels).save(tmp_path / "a.png", compress_level=0)
    Image.fromarray(pixels).save(tmp_path / "b.png", compress_level=9, pnginfo=_text_chunk())
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    a, b, c = (check_input_data([("a cat", x)], img2img)[0]
               for x in (str(tmp_path / "a.png"), str(tmp_path / "b.png"), pixels))
    digest = image_sha256(a.image)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert image_sha256(b.image) == image_sha256(c.image) == digest
    assert a.digest()[0] == digest[:16]
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    assert image_sha256(Image.fromarray(changed)) != digest
    assert image_sha256(Image.fromarray(pixels).resize((32, 32))) != digest
    assert image_sha256(Image.fromarray(pixels).convert("L")) != digest


def _text_chunk():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "saved again")
    return info
