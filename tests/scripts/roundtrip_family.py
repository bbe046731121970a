"""Optimize a preset of another model family and save it (step "save"), or load it into a fresh
pipeline in a new process (step "load"); both write the image they make for the same prompt and
seed, and print what was chosen and the search table's statuses (JSON)."""

import json
import sys

import numpy as np
import torch

import sdopt
from sdopt.models import pipeline_inputs
from sdopt.optimize.optimized import optimized_unet_of

PROMPT, SEED, STEPS = "a photo of a cat", 7, 4
BACKENDS = ["torch_eager", "openvino"]


def image(pipe):
    # Image-to-image and inpainting pipelines get sdopt's default start image (and mask).
    out = pipe(PROMPT, **pipeline_inputs(pipe, 64, 64), num_inference_steps=STEPS,
               generator=torch.Generator().manual_seed(SEED))
    return np.asarray(out.images[0], dtype=np.int16)


def main(step, directory, preset, how):
    pipe = sdopt.build_preset(preset)
    rows = {}
    if step == "save":
        if how in ("constrained", "unconstrained"):
            optimized = sdopt.optimize_model(pipe, [PROMPT, "a dog"], metric_drop_ths=0.05,
                                             optimization_time=how, backends=BACKENDS,
                                             num_inference_steps=STEPS, repeats=2, show=False)
            rows = {c.id: [c.status, c.reason] for c in optimized.sdopt_result.candidates}
        else:
            optimized = sdopt.apply_variant(pipe, how)
        sdopt.save_model(optimized, directory)
        np.save(f"{directory}.first.npy", image(optimized))
    else:
        optimized = sdopt.load_model(directory, pipe=pipe)
        np.save(f"{directory}.second.npy", image(optimized))
    denoiser = optimized_unet_of(optimized)  # pipe.unet, or pipe.transformer for the DiTs
    print(json.dumps({"variant": denoiser.variant.id,
                      "techniques": denoiser.info.get("techniques", []), "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
