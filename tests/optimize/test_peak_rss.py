"""The search's peak resident memory (#18, "Memory"): measured over the search alone (Linux's
resettable high-water mark), per candidate, and reported in the summary table, the result's
dict and the saved manifest."""

import json

import numpy as np
import psutil
import pytest

import sdopt
from sdopt.optimize.manifest import MANIFEST_NAME
from sdopt.optimize.memory import PeakRss, process_peak_rss
from sdopt.optimize.summary import candidates_table, summary_table
from sdopt.optimize.table import OptimizationResult

MB = 2 ** 20


def _touch(n_bytes: int) -> np.ndarray:
    block = np.ones(n_bytes, dtype=np.uint8)  # written: resident, not just reserved
    return block


def test_a_span_sees_a_peak_that_is_gone_at_its_end_and_nested_spans_keep_the_outer_one():
    with PeakRss() as outer:
        if not outer.exact:
            pytest.skip("this system cannot reset the process's peak RSS")
        base = psutil.Process().memory_info().rss
        block = _touch(300 * MB)
        del block  # released before any span ends
        with PeakRss() as inner:  # resets the high-water mark: the outer must keep the 300 MB
            small = _touch(50 * MB)
            del small
    assert outer.peak >= base + 290 * MB
    assert inner.exact and inner.peak < outer.peak
    assert inner.peak < base + 200 * MB  # the inner span did not see the earlier 300 MB
    with PeakRss() as later:  # a new span starts from the current size, not the old peak
        pass
    assert later.peak < base + 200 * MB
    # The process's own peak survives the resets (benchmarks report it).
    assert process_peak_rss() >= outer.peak


def _text(table) -> str:
    from rich.console import Console

    console = Console(width=400, record=True, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


def test_the_search_reports_its_peak_rss_per_candidate_in_the_table_and_the_manifest(
        tiny_pipe, tmp_path):
    optimized = sdopt.optimize_model(tiny_pipe, ["a photo of a cat"], metric_drop_ths=0.05,
                                     backends=["torch_eager/fp32-channels_last"],
                                     num_inference_steps=2, repeats=1, end_to_end=False,
                                     show=False, reuse_search=False)
    result = optimized.sdopt_result
    ram = psutil.virtual_memory().total
    assert 50 * MB < result.peak_rss_bytes < ram
    assert result.peak_rss_scope == "search"
    assert result.peak_rss_bytes <= psutil.Process().memory_info().rss * 4
    built = [c for c in result.candidates if c.build_s is not None]
    assert len(built) == 2
    for row in built:
        assert 0 < row.peak_rss_bytes <= result.peak_rss_bytes, row.id

    data = json.loads(json.dumps(result.to_dict()))
    assert data["peak_rss_bytes"] == result.peak_rss_bytes
    assert OptimizationResult.from_dict(data).peak_rss_bytes == result.peak_rss_bytes
    summary = _text(summary_table(result))
    assert "peak RSS (search)" in summary and "GiB RAM" in summary
    assert "peak RSS" in _text(candidates_table(result))

    saved = sdopt.save_model(optimized, tmp_path / "m")
    manifest = json.loads((saved / MANIFEST_NAME).read_text())
    assert manifest["metrics"]["peak_rss_bytes"] == result.peak_rss_bytes
    assert manifest["search"]["peak_rss_bytes"] == result.peak_rss_bytes
    assert manifest["search"]["candidates"][0]["peak_rss_bytes"] > 0
