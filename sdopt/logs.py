"""Silencing the libraries' notes that are expected here and would only alarm a user.

diffusers warns that fp16 modules should stay fp32 for training, and that a scheduler config
has keys another scheduler ignores; ONNX Runtime's quantizer advises pre-processing through the
root logger; transformers says "`loss_type=None` was set in the config but it is unrecognized"
when OpenVINO's tracer (``torch.jit.trace`` looking for exported methods) reads every attribute
of a text encoder, ``loss_function`` (a training-only property) included. Each is expected when
sdopt does what it does, so it is silenced for that call only, and the previous level is always
restored.

Without torchvision (sdopt does not need it), torch's ONNX exporter logs "torchvision is not
installed. Skipping ..." for each torchvision operator it would register, and transformers logs
"`CLIPImageProcessor` requires torchvision (not installed); falling back to ..." when diffusers'
pipelines import its image processors. Neither changes anything sdopt does; only those records
are dropped (a filter on the two loggers, not their level), around sdopt's exports and imports,
and for the whole process in the CLI.
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


# The loggers that report a missing torchvision, and the words of those records.
TORCHVISION_LOGGERS = ("torch.onnx._internal.exporter._registration",
                       "transformers.utils.import_utils")


class _NoTorchvisionNotes(logging.Filter):
    """Drops the 'torchvision is not installed' / 'requires torchvision' notes, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("torchvision" in message
                    and ("not installed" in message or "requires torchvision" in message))


_TORCHVISION_FILTER = _NoTorchvisionNotes()


def silence_torchvision_notes() -> None:
    """Drop the notes for the rest of the process (the CLI: the process is sdopt's)."""
    for name in TORCHVISION_LOGGERS:
        logging.getLogger(name).addFilter(_TORCHVISION_FILTER)  # a no-op when already there


@contextlib.contextmanager
def quiet_torchvision_notes() -> Iterator[None]:
    """Drop the notes while sdopt exports or imports diffusers' pipelines (library calls); a
    filter that was there before (the CLI's) stays."""
    loggers = [logging.getLogger(name) for name in TORCHVISION_LOGGERS]
    added = [lg for lg in loggers if _TORCHVISION_FILTER not in lg.filters]
    for lg in added:
        lg.addFilter(_TORCHVISION_FILTER)
    try:
        yield
    finally:
        for lg in added:
            lg.removeFilter(_TORCHVISION_FILTER)


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


# transformers' logger that reports an unrecognized ``loss_type`` when ``loss_function`` is read.
TRANSFORMERS_MODELING_LOGGER = "transformers.modeling_utils"


@contextlib.contextmanager
def quiet_transformers_modeling() -> Iterator[None]:
    """transformers' ``modeling_utils`` logger at error level (its notes about training-only
    attributes of a model sdopt only traces for inference); transformers' other loggers keep
    their level."""
    logger = logging.getLogger(TRANSFORMERS_MODELING_LOGGER)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
