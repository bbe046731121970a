"""sdopt does not need torchvision, so torch's ONNX exporter and transformers' image processors
must not print 'torchvision is not installed' notes where sdopt triggers them: in the library
(building a pipeline, exporting) and in the CLI. Each case runs in a fresh process, since
transformers warns only once per process; other records of those loggers still pass."""

import logging
import os
import subprocess
import sys

import pytest

EXPORT = """
import tempfile, torch
from sdopt.backends.export import export_onnx
module = torch.nn.Sequential(torch.nn.Linear(4, 4))
print(export_onnx(module, (torch.randn(1, 4),), tempfile.mkdtemp(), ["x"], ["y"])["exporter"])
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env)


def test_building_a_pipeline_prints_no_torchvision_note():
    proc = _run("import sdopt; sdopt.build_preset('tiny'); print('ok')")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    assert "torchvision" not in proc.stderr, proc.stderr


def test_onnx_export_prints_no_torchvision_note():
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    proc = _run(EXPORT)
    assert proc.returncode == 0 and "dynamo" in proc.stdout, proc.stderr[-2000:]
    assert "torchvision" not in proc.stderr, proc.stderr


def test_the_cli_prints_no_torchvision_note():
    proc = _run("import sys; from sdopt.cli import main; "
                "sys.argv = ['sdopt', 'models', 'list']; main()")
    assert "tiny" in proc.stdout, proc.stderr[-2000:]
    assert "torchvision" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("index", [0, 1])
def test_only_the_torchvision_notes_are_dropped(index):
    from sdopt.logs import TORCHVISION_LOGGERS, quiet_torchvision_notes

    class Keep(logging.Handler):
        records: list = []

        def emit(self, record):
            self.records.append(record.getMessage())

    logger, handler = logging.getLogger(TORCHVISION_LOGGERS[index]), Keep()
    # Other tests quiet these libraries' loggers (transformers' verbosity, sdopt's own quieting):
    # this one is about the filter, so the logger must let warnings through while it runs.
    level, disabled, filters = logger.level, logger.disabled, list(logger.filters)
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        with quiet_torchvision_notes():
            logger.warning("torchvision is not installed. Skipping torchvision::nms")
            logger.warning("`CLIPImageProcessor` requires torchvision (not installed)")
            logger.warning("an unrelated warning")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    assert handler.records == ["an unrelated warning"]
    # Left as found: an in-process CLI test may have installed the CLI's filter for good.
    assert logger.filters == filters, "the filter is removed afterwards"
