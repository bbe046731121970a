"""Identities of models: which architecture and which weights a saved artifact was made from.

Exports, engines, saved models and cached search decisions are keyed by these, so that an
artifact is never reused for another model; backends and the optimizer both need them, so they
live at the bottom of the package, next to the device fingerprint.
"""

from __future__ import annotations

import hashlib
import json

import torch


def config_hash(module) -> str:
    """Architecture identity of a diffusers model: its config without diffusers' private
    bookkeeping (``_name_or_path``, ``_diffusers_version``)."""
    config = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_hash(module: torch.nn.Module) -> str:
    """Identity of the weights, so a saved model can tell which pipeline it was made from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
