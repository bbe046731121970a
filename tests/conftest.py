import os

import pytest

# Tests never reach the hub; an accidental download attempt fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
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
    from sdopt.sampling import collect_samples

    return collect_samples(tiny_pipe, PROMPTS, height=64, width=64, steps=4, guidance_scale=7.5,
                           seed=0, n_verify=8)
