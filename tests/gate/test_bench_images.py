"""sdopt.toml's bench.start_image / bench.mask_image: image-to-image and inpainting models are
benched (and searched) on the configured images, read as untrusted paths inside the config's
folder; a bad one is one line naming the file and the field (exit 2 from the CLI)."""

import functools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import sdopt
from sdopt.cli import main
from sdopt.errors import SdoptError
from sdopt.gate.bench import bench_config, bench_inputs, write_results
from sdopt.gate.compare import Inputs, compare_results
from sdopt.gate.config import load_config
from sdopt.gate.results import NOT_COMPARABLE, exit_code, read_results
from sdopt.optimize.inputs import image_sha256

BENCH = ('prompts = ["a cat", "a dog"]\nseeds = [0]\nsteps = 2\nruns = 1\nwarmup = 0\n'
         'batch = 1\nthreads = 1\n')


def stripes(h, w) -> np.ndarray:
    x = np.arange(w)[None, :, None].repeat(h, 0)
    return np.concatenate([(x // 4 % 2) * 255, (1 - x // 4 % 2) * 255, x * 0 + 128],
                          -1).astype(np.uint8)


def left_mask(h, w) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[:, : w // 3] = 255
    return mask


def _config(root, model, bench_extra, optimize='candidate = "torch_eager/fp32"\n'):
    root.mkdir(parents=True, exist_ok=True)
    path = root / "sdopt.toml"
    path.write_text(f'model = "{model}"\n\n[bench]\n{BENCH}{bench_extra}\n[optimize]\n{optimize}')
    return path


def _spy(monkeypatch, preset):
    """Record (prompts, image, mask_image) of every call of the preset's pipeline class."""
    cls = type(sdopt.build_preset(preset))
    original, seen = cls.__call__, []

    @functools.wraps(original)  # sdopt reads the signature: which inputs the call takes
    def spy(self, prompt=None, *args, **kwargs):
        mask = kwargs.get("mask_image")
        seen.append((prompt if isinstance(prompt, str) else tuple(prompt),
                     np.asarray(kwargs.get("image")).copy(),
                     None if mask is None else np.asarray(mask).copy()))
        return original(self, prompt, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    return seen


def _named(seen, prompt):
    return [s for s in seen if s[0] in (prompt, (prompt,))]


def test_a_bench_of_an_img2img_model_uses_each_prompts_start_image_and_its_size(
        tmp_path, monkeypatch):
    """One start image per prompt, at the first image's size (48 x 40, not the preset's 64),
    in the original's and the search's calls alike."""
    (tmp_path / "img").mkdir()
    Image.fromarray(stripes(48, 40)).save(tmp_path / "img" / "cat.png")
    Image.fromarray(255 - stripes(48, 40)).save(tmp_path / "img" / "dog.png")
    path = _config(tmp_path, "img2img-tiny",
                   'start_image = ["img/cat.png", "img/dog.png"]\n',
                   optimize='metric_drop_ths = 0.05\nbackends = ["torch_eager"]\nsteps = 2\n'
                            'repeats = 1\n')
    seen = _spy(monkeypatch, "img2img-tiny")
    results = bench_config(load_config(path), tmp_path / "out", progress=False)
    assert (results["config"]["height"], results["config"]["width"]) == (48, 40)
    cats, dogs = _named(seen, "a cat"), _named(seen, "a dog")
    # The search (capture, end to end) and both variants of the bench.
    assert len(cats) >= 4 and len(dogs) >= 4
    assert all(np.array_equal(image, stripes(48, 40)) for _, image, _ in cats)
    assert all(np.array_equal(image, 255 - stripes(48, 40)) for _, image, _ in dogs)
    assert results["config"]["start_image"] == ["img/cat.png", "img/dog.png"]
    # The pixels each prompt's pipeline calls got, by hash (#18); no mask for img2img.
    assert results["config"]["start_image_sha256"] == [
        image_sha256(Image.fromarray(a)) for a in (stripes(48, 40), 255 - stripes(48, 40))]
    assert results["config"]["mask_image_sha256"] == [None, None]
    for name in ("original", "optimized"):
        image = Image.open(tmp_path / "out" / results["variants"][name]["images"][0]["path"])
        assert image.size == (40, 48)


def test_an_inpainting_bench_batches_the_start_image_and_mask_of_every_prompt(
        tmp_path, monkeypatch):
    """One path for every prompt; a batch of two images gets two of each, fitted to the
    configured size."""
    Image.fromarray(stripes(64, 64)).save(tmp_path / "start.png")
    Image.fromarray(left_mask(64, 64)).save(tmp_path / "mask.png")
    path = _config(tmp_path, "inpaint-tiny",
                   'start_image = "start.png"\nmask_image = "mask.png"\nheight = 32\n'
                   'width = 32\n')
    text = path.read_text().replace("batch = 1", "batch = 2")
    path.write_text(text)
    seen = _spy(monkeypatch, "inpaint-tiny")
    results = bench_config(load_config(path), tmp_path / "out", progress=False)
    assert seen and all(s[0] == ("a cat", "a dog") for s in seen)
    start = np.asarray(Image.fromarray(stripes(64, 64)).resize((32, 32), Image.LANCZOS))
    mask = np.asarray(Image.fromarray(left_mask(64, 64)).resize((32, 32), Image.NEAREST))
    for _, images, masks in seen:
        assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)
        assert all(np.array_equal(i, start) for i in images)
        assert all(np.array_equal(m, mask) for m in masks)
    assert len(results["variants"]["optimized"]["images"]) == 2
    # The hashes are of the fitted pixels, the same for both prompts (one path for every prompt).
    assert results["config"]["start_image_sha256"] == [image_sha256(Image.fromarray(start))] * 2
    assert results["config"]["mask_image_sha256"] == [image_sha256(Image.fromarray(mask))] * 2


def test_without_start_images_the_bench_keeps_the_default_image(tmp_path, monkeypatch):
    path = _config(tmp_path, "img2img-tiny", "")
    seen = _spy(monkeypatch, "img2img-tiny")
    results = bench_config(load_config(path), tmp_path / "out", progress=False)
    default = np.asarray(sdopt.models.default_image(64, 64))
    assert seen and all(np.array_equal(image, default) for _, image, _ in seen)
    # The fixed default images: no hashes, as in text-to-image results.
    assert not {"start_image_sha256", "mask_image_sha256"} & set(results["config"])


def test_the_gate_refuses_a_baseline_made_from_another_start_image(tmp_path):
    """#18: the same start image (even re-saved as another file) is comparable; another start
    image is "not comparable" naming the field and the prompt (exit 3), never a quality
    regression; results written without the hashes still load."""
    Image.fromarray(stripes(32, 32)).save(tmp_path / "start.png", compress_level=0)
    path = _config(tmp_path, "img2img-tiny",
                   'start_image = "start.png"\nvariants = ["optimized"]\n')

    def bench(name):
        out = tmp_path / name
        results = bench_config(load_config(path), out, progress=False)
        write_results(results, out)
        return read_results(out), out

    base, base_dir = bench("base")
    Image.fromarray(stripes(32, 32)).save(tmp_path / "start.png", compress_level=9)
    same, same_dir = bench("same")
    Image.fromarray(255 - stripes(32, 32)).save(tmp_path / "start.png")
    other, other_dir = bench("other")
    verdict = compare_results(Inputs(base, base_dir, same, same_dir))
    assert verdict["verdict"] != NOT_COMPARABLE
    assert not verdict["quality"]["regressed"]
    verdict = compare_results(Inputs(base, base_dir, other, other_dir))
    assert verdict["verdict"] == NOT_COMPARABLE and exit_code(verdict) == 3
    assert verdict["reasons"][0].startswith("not comparable: config start_image_sha256 differs "
                                            "for prompts 'a cat', 'a dog'")
    assert not any(r.startswith("quality regression") for r in verdict["reasons"])
    # A baseline written before the hashes were recorded: it loads, and cannot vouch for its
    # start image.
    old = json.loads((base_dir / "results.json").read_text())
    for key in ("start_image_sha256", "mask_image_sha256"):
        del old["config"][key]
    (base_dir / "results.json").write_text(json.dumps(old))
    verdict = compare_results(Inputs(read_results(base_dir), base_dir, same, same_dir))
    assert verdict["verdict"] == NOT_COMPARABLE
    assert any("baseline none (" in r for r in verdict["reasons"]), verdict["reasons"]


def _error(path) -> str:
    with pytest.raises(SdoptError) as info:
        bench_inputs(load_config(path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_start_images_are_one_line_naming_the_file_and_the_field(tmp_path):
    (tmp_path / "not-an-image.png").write_text("hello")
    Image.fromarray(stripes(16, 16)).save(tmp_path / "ok.png")
    cases = {
        'start_image = "missing.png"\n': ("bench.start_image'", "'missing.png' is not a file"),
        'start_image = ["ok.png", "not-an-image.png"]\n':
            ("bench.start_image[1]'", "cannot be read as an image"),
        'start_image = "ok.png"\nmask_image = "missing-mask.png"\n':
            ("bench.mask_image'", "is not a file"),
    }
    for extra, (field, words) in cases.items():
        path = _config(tmp_path, "img2img-tiny", extra)
        message = _error(path)
        assert message.startswith(f"{path}: field '") and field in message, message
        assert words in message, message


@pytest.mark.parametrize("extra, words", [
    ('start_image = ["a.png", "b.png", "c.png"]\n', "lists 3 paths for 2 prompts"),
    ('mask_image = "m.png"\n', "mask_image is set without start_image"),
    ('start_image = ""\n', "expected an image file path"),
    ('start_image = 3\n', "expected an image file path"),
])
def test_malformed_image_fields_are_refused_when_the_config_loads(tmp_path, extra, words):
    path = _config(tmp_path, "img2img-tiny", extra)
    with pytest.raises(SdoptError, match=words) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: field 'bench")


def test_image_paths_cannot_leave_the_configs_folder_unless_allowed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(stripes(16, 16)).save(outside / "secret.png")
    repo = tmp_path / "repo"
    (repo / "img").mkdir(parents=True)
    os.symlink(outside / "secret.png", repo / "img" / "link.png")
    Image.fromarray(stripes(16, 16)).save(repo / "img" / "inside.png")
    for value, words in ((str(outside / "secret.png"), "is not relative to the config's folder"),
                         ("../outside/secret.png", "leads outside the config's folder"),
                         ("img/link.png", "leads outside the config's folder"),
                         ("~/secret.png", "is not relative to the config's folder")):
        message = _error(_config(repo, "img2img-tiny", f'start_image = "{value}"\n'))
        assert "field 'bench.start_image'" in message and words in message, message
        assert "allow_outside_paths" in message
    # Inside the folder, through '..' or a link that stays inside, is fine.
    os.symlink(repo / "img" / "inside.png", repo / "img" / "inner-link.png")
    for value in ("img/../img/inside.png", "img/inner-link.png"):
        inputs, _, _ = bench_inputs(load_config(
            _config(repo, "img2img-tiny", f'start_image = "{value}"\n')))
        assert inputs[0].image.size == (16, 16)
    # Explicitly allowed: an absolute path and a link out are read.
    for value in (str(outside / "secret.png"), "img/link.png"):
        inputs, _, _ = bench_inputs(load_config(_config(
            repo, "img2img-tiny", f'start_image = "{value}"\nallow_outside_paths = true\n')))
        assert np.array_equal(np.asarray(inputs[1].image), stripes(16, 16))


def test_a_start_image_for_a_text_to_image_model_is_refused_naming_the_field(tmp_path):
    Image.fromarray(stripes(64, 64)).save(tmp_path / "start.png")
    path = _config(tmp_path, "tiny", 'start_image = "start.png"\n')
    with pytest.raises(SdoptError, match=r"field 'bench.start_image': StableDiffusionPipeline "
                                         "takes no start image"):
        bench_config(load_config(path), tmp_path / "out", progress=False)


def test_the_cli_exits_2_with_one_line_for_a_missing_start_image(tmp_path):
    path = _config(tmp_path, "img2img-tiny", 'start_image = "missing.png"\n')
    result = CliRunner().invoke(main, ["bench", "--config", str(path), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bench.start_image" in lines[0] and "missing.png" in lines[0]
