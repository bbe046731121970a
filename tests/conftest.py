import os

import pytest

# Tests never reach the hub; an accidental download attempt fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Every test searches for real; tests of the reuse itself pass reuse_search=True.
os.environ.setdefault("SDOPT_REUSE_SEARCH", "0")
# Exports and engines built by tests go to a throw-away cache, never the user's (~/.cache/sdopt).
if "SDOPT_CACHE" not in os.environ:
    import tempfile

    os.environ["SDOPT_CACHE"] = tempfile.mkdtemp(prefix="sdopt-test-cache-")

PROMPTS = ["a photo of a cat", "a painting of a city at night"]


@pytest.fixture(scope="session")
def tiny_pipe():
    """One tiny pipeline for tests that do not modify it (optimize_model leaves it untouched)."""
    from sdopt.models import build_preset

    return build_preset("tiny")


@pytest.fixture
def fresh_tiny_pipe():
    from sdopt.models import build_preset

    return build_preset("tiny")


@pytest.fixture
def prompts():
    return list(PROMPTS)


def image_array(pipe, prompt="a photo of a cat", seed=0, steps=4):
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    image = pipe(prompt, num_inference_steps=steps, generator=gen).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="session")
def export_cache():
    """The session's throw-away export cache (SDOPT_CACHE above): conversions are paid once."""
    from pathlib import Path

    return Path(os.environ["SDOPT_CACHE"])


@pytest.fixture(scope="module")
def samples(tiny_pipe):
    """UNet calls recorded as optimize_model(..., num_inference_steps=4) records them, so that a
    backend built from them has the same calibration data and cache key as in a search."""
    from sdopt.optimize.capture import collect_samples

    return collect_samples(tiny_pipe, PROMPTS, height=64, width=64, steps=4, guidance_scale=7.5,
                           seed=0, n_verify=8)


@pytest.fixture(scope="module")
def local_clip(tmp_path_factory):
    """A real transformers CLIP model with random weights, saved as a local folder: the shape
    of a user's downloaded CLIP (none can be downloaded here)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdopt.models import make_clip_tokenizer

    torch.manual_seed(0)
    tok = make_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    processor.save_pretrained(path)
    from sdopt.optimize.metrics import configure_clip

    configure_clip(path)
    yield path
    configure_clip(None)


def cpu_described(bf16: bool):
    """This machine's CPU described with or without bf16 units: for rules and labels that
    depend on them (none of these tests runs a bf16 kernel), tested on every CPU."""
    import dataclasses

    from sdopt.device import detect

    cpu = detect("cpu")
    flags = tuple(f for f in cpu.cpu_flags if f not in ("avx512_bf16", "amx_bf16"))
    return dataclasses.replace(cpu, cpu_flags=flags + (("avx512_bf16",) if bf16 else ()))


def build_variant(pipe, backend_name: str, variant_name: str, samples, cache_dir=None, *,
                  recorded_ranges: bool = True, device=None):
    """A backend variant built from the recorded samples, as the search builds it (so its cache
    keys are the search's), from the pipeline's denoiser (its UNet or its DiT transformer).
    ``recorded_ranges=False``: without the activation ranges the capture recorded. ``device``:
    another description of this CPU (other flags) to build for."""
    import torch

    from sdopt.backends import get_backend
    from sdopt.backends.base import BuildContext
    from sdopt.device import detect
    from sdopt.models import denoiser_of

    dev = device or detect("cpu")
    backend = get_backend(backend_name)
    variant = next(v for v in backend.variants(dev) if v.name == variant_name)
    reason = backend.unavailable_reason(dev, variant)
    # bf16 on a CPU without bf16 units runs emulated: correct, only slow (the search skips it
    # for that reason); what these tests check is that the graph builds and is right.
    assert reason is None or (variant.precision == "bf16" and not dev.supports_bf16()[0]), reason
    ctx = BuildContext(device=dev, example=samples.verification[0].inputs,
                       calibration=[s.inputs for s in samples.calibration],
                       cache_dir=cache_dir,
                       calibration_ranges=samples.calibration_ranges() if recorded_ranges else [])
    with torch.inference_mode():
        return backend.build(denoiser_of(pipe), variant, ctx)


def verification_drops(module, samples) -> list[float]:
    """The default metric's drop of ``module`` on each held-out recorded UNet call."""
    import torch

    from sdopt.optimize.metrics import resolve_metric

    metric = resolve_metric(None)
    with torch.inference_mode():
        return [float(metric.fn(s.reference, module(s.inputs.sample, s.inputs.timestep,
                                                    s.inputs.encoder_hidden_states)))
                for s in samples.verification]
