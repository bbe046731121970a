"""Optimize an image-to-image or inpainting preset with (prompt, image[, mask]) inputs and save
it (step "save"), or load it into a fresh pipeline in a new process (step "load"); both write
the image they make from the same prompt, start image, mask and seed, and print what was chosen
(JSON). The start image and mask are made here, deterministically, unlike sdopt's defaults."""

import json
import sys

import numpy as np
import torch

import sdopt
from sdopt.optimize.optimized import optimized_unet_of

SEED, STEPS, SIDE = 7, 4, 64
PROMPTS = ["a photo of a cat", "a dog"]


def start_image(index: int) -> np.ndarray:
    """A user's start image: stripes, unlike sdopt's default gradients and disc."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    stripes = ((x + 3 * index) // 6 % 2).astype(np.float32)
    return np.stack([stripes, 1 - stripes, (y / SIDE).astype(np.float32)], -1)


def mask(index: int) -> np.ndarray:
    out = np.zeros((SIDE, SIDE), dtype=np.uint8)
    out[:SIDE // 2, index * 8:] = 255  # the top half, unlike the default centre square
    return out


def entries(preset: str) -> list:
    inpaint = preset.startswith("inpaint")
    return [(p, start_image(i), mask(i)) if inpaint else (p, start_image(i))
            for i, p in enumerate(PROMPTS)]


def image(pipe, preset):
    entry = entries(preset)[0]
    kwargs = {"image": entry[1]}
    if len(entry) == 3:
        kwargs.update(mask_image=entry[2], height=SIDE, width=SIDE)
    out = pipe(entry[0], **kwargs, num_inference_steps=STEPS,
               generator=torch.Generator().manual_seed(SEED))
    return np.asarray(out.images[0], dtype=np.int16)


def main(step, directory, preset):
    pipe = sdopt.build_preset(preset)
    info = {}
    if step == "save":
        optimized = sdopt.optimize_model(pipe, entries(preset), metric_drop_ths=0.05,
                                         backends=["torch_eager"], num_inference_steps=STEPS,
                                         repeats=2, show=False)
        result = optimized.sdopt_result
        info = {"samples": result.samples, "end_to_end": result.end_to_end,
                "rows": {c.id: [c.status, c.reason] for c in result.candidates}}
        sdopt.save_model(optimized, directory)
        np.save(f"{directory}.first.npy", image(optimized, preset))
    else:
        optimized = sdopt.load_model(directory, pipe=pipe)
        np.save(f"{directory}.second.npy", image(optimized, preset))
    np.save(f"{directory}.{step}-original.npy", image(sdopt.build_preset(preset), preset))
    denoiser = optimized_unet_of(optimized)
    print(json.dumps({"variant": denoiser.variant.id, **info}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:4])
