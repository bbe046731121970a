"""Save (step "save") a tiny pipeline with the given techniques on a backend, or load it into a
fresh pipeline in a new process (step "load"); both write the images they make for the same
prompt and seed, so the test can compare them across processes."""

import json
import sys

import numpy as np
import torch

import sdopt
from sdopt.optimize.optimized import assemble
from sdopt.device import detect

PROMPT, SEED, STEPS = "a photo of a cat", 7, 6


def images(pipe):
    out = []
    for seed in (SEED, SEED + 1):  # two generations: caches must reset between them
        gen = torch.Generator().manual_seed(seed)
        out.append(np.asarray(pipe(PROMPT, num_inference_steps=STEPS, generator=gen).images[0],
                              dtype=np.int16))
    return np.stack(out)


def main(step, directory, variant, specs_json):
    pipe = sdopt.build_preset("tiny")
    if step == "save":
        specs = json.loads(specs_json)
        base = sdopt.apply_variant(pipe, variant)
        optimized = assemble(pipe, base.unet.module, specs, detect("cpu"),
                              info={**base.unet.info, "techniques": specs})
        sdopt.save_model(optimized, directory)
        np.save(f"{directory}.first.npy", images(optimized))
    else:
        loaded = sdopt.load_model(directory, pipe=pipe)
        np.save(f"{directory}.second.npy", images(loaded))
        optimized = loaded
    print(json.dumps(optimized.unet.info["techniques"]))


if __name__ == "__main__":
    main(*sys.argv[1:5])
