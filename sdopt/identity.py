"""Identities of models: which architecture and which weights a saved artifact was made from.

Exports, engines, saved models and cached search decisions are keyed by these, so that an
artifact is never reused for another model; backends and the optimizer both need them, so they
live at the bottom of the package, next to the device fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import weakref

import torch


def config_hash(module) -> str:
    """Architecture identity of a diffusers model: its config without diffusers' private
    bookkeeping (``_name_or_path``, ``_diffusers_version``)."""
    config = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# module -> (signature of its tensors, hash): see weights_hash
_HASHES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def weights_hash(module: torch.nn.Module) -> str:
    """Identity of the weights, so a saved model can tell which pipeline it was made from.

    Hashing the SD 1.5 UNet's 3.4 GB takes 3.4 s, and one search asks for it several times (the
    decision cache, each export's key, the saved manifest): the hash is reused while no tensor
    was replaced or modified in place (tensor version counters)."""
    try:
        signature = tuple((name, t.data_ptr(), t._version, str(t.dtype), t.device.type)
                          for name, t in module.state_dict(keep_vars=True).items())
    except RuntimeError:  # inference tensors have no version counter: hash every time
        return _hash(module)
    memo = _HASHES.get(module)
    if memo is None or memo[0] != signature:
        memo = _HASHES[module] = (signature, _hash(module))
    return memo[1]


def _hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        # the array itself (a buffer): no copy of the bytes
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
