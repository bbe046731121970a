"""Silencing the libraries' notes that are expected here and would only alarm a user.

diffusers warns that fp16 modules should stay fp32 for training, and that a scheduler config
has keys another scheduler ignores; ONNX Runtime's quantizer advises pre-processing through the
root logger. Each is expected when sdopt does what it does, so it is silenced for that call only,
and the previous level is always restored.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.ERROR) -> Iterator[None]:
    """Python's root logger at ``level`` (libraries that log through it, e.g. ONNX Runtime's
    quantization tools)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' own logger at error level."""
    from diffusers.utils import logging as diffusers_logging

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(previous)
