"""Optimize the tiny pipeline and save it (step "save"), or load it into a fresh pipeline in a new
process (step "load"); both write the image they make for the same prompt and seed."""

import sys

import numpy as np
import torch

import sdopt

PROMPT, SEED, STEPS = "a photo of a cat", 7, 4


def image(pipe):
    out = pipe(PROMPT, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(SEED))
    return np.asarray(out.images[0], dtype=np.int16)


def main(step, directory, candidate):
    pipe = sdopt.build_preset("tiny")
    if step == "save":
        if candidate == "search":
            optimized = sdopt.optimize_model(pipe, [PROMPT, "a dog"], metric_drop_ths=0.05,
                                             num_inference_steps=4, repeats=2, show=False,
                                             ignore_compilers=["torch_compile"])
        else:
            optimized = sdopt.apply_variant(pipe, candidate)
        sdopt.save_model(optimized, directory)
        np.save(f"{directory}.first.npy", image(optimized))
        print(optimized.unet.variant.id)
    else:
        loaded = sdopt.load_model(directory, pipe=pipe)
        np.save(f"{directory}.second.npy", image(loaded))
        print(loaded.unet.variant.id)


if __name__ == "__main__":
    main(*sys.argv[1:4])
