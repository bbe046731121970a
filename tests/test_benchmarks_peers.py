"""benchmarks/peers.py on the tiny preset: the rows that run offline in our .venv (fp32 eager and
DeepCache) in their own processes, the FLOP count, the CPU-peak arithmetic and the report.

The optimum peers need their own venvs (benchmarks/peers/setup.sh) and minutes of export, so
they are exercised by the benchmark itself, not here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH / "peers"))

import peers_limits  # noqa: E402
import peers_report  # noqa: E402


def _load_peers():
    spec = importlib.util.spec_from_file_location("peers_bench", BENCH / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_is_cores_times_clock_times_flops_per_cycle():
    peaks = peers_limits.peaks(3.0, 2)
    assert peaks == {"fp32": 192.0, "bf16": 384.0, "int8": 768.0}
    limits = {"peak_gflops": peaks}
    assert peers_limits.fraction_of_peak(96.0, 1.0, "fp32", limits) == pytest.approx(0.5)
    assert peers_limits.fraction_of_peak(96.0, 1.0, "fp16", limits) is None


def test_attainable_gemm_rates_are_measured_per_precision():
    rates = peers_limits.attainable_gemm(side=512, repeats=2)
    assert set(rates) == {"fp32", "bf16", "int8"} and all(v > 0 for v in rates.values())
    limits = {"attainable_gemm_gflops": rates}
    assert peers_limits.fraction_of_peak(rates["int8"], 1.0, "int8", limits,
                                         of="attainable_gemm_gflops") == pytest.approx(1.0)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler to measure the clock with")
def test_measured_clock_is_a_plausible_cpu_clock():
    ghz = peers_limits.measure_ghz(iterations=20_000_000, repeats=2)
    assert 0.5 < ghz < 7.0


def test_unet_flops_grow_with_the_image_area(tiny_pipe):
    import peers_worker

    small = peers_worker.unet_flops(tiny_pipe, 64)
    large = peers_worker.unet_flops(tiny_pipe, 128)
    assert small > 0
    # 4x the latent pixels: convolutions scale 4x, self-attention more.
    assert 3.5 < large / small < 8.0


def test_fp32_and_deepcache_rows_run_interleaved_and_write_results(tmp_path):
    pytest.importorskip("DeepCache", reason="DeepCache is not installed (pip install 'sdopt[peers]')")
    peers = _load_peers()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Title\n\nhand-written analysis stays\n")
    rc = peers.main(["--preset", "tiny", "--sizes", "64", "--steps", "3", "--rounds", "2",
                     "--only", "deepcache", "--work", str(tmp_path / "work"),
                     "--results", str(tmp_path / "results"), "--doc", str(doc)])
    assert rc == 0
    result = json.loads((tmp_path / "results" / "peers_tiny_64.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"fp32_eager", "deepcache"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert len(row["latencies_s"]) == 2 and row["median_s"] > 0
        assert row["peak_rss_bytes"] > 0
        assert 0 < row["run_peak_rss_bytes"] <= row["peak_rss_bytes"]
    assert rows["fp32_eager"]["vs_fp32"] == 1.0
    assert rows["fp32_eager"]["psnr_db"] == float("inf")  # same process recipe, same seed
    assert 0 < rows["deepcache"]["psnr_db"] < float("inf")  # cached steps change the image
    assert result["best_peer"] == "deepcache"
    assert any(n.startswith("diffusers_recipe, optimum_openvino, ") and "not run (--only" in n
               for n in result["notes"]), result["notes"]
    assert result["unet_flops"] > 0
    assert result["unet"][0]["row"] == "fp32_eager" and result["unet"][0]["fraction_of_peak"] > 0
    text = doc.read_text()
    assert "hand-written analysis stays" in text and peers_report.BEGIN in text
    assert "DeepCache" in text and "GFLOP" in text
    page = (tmp_path / "results" / "peers_tiny.html").read_text()
    assert page.count("data-plotly-chart>") == 2 and "Plotly.newPlot" in page


def _result(status="ok"):
    row = {"row": "fp32_eager", "label": "fp32 | <b>", "kind": "reference", "status": status,
           "latencies_s": [2.0, 2.2], "median_s": 2.1, "vs_fp32": 1.0, "vs_best_peer": 0.5,
           "psnr_db": float("inf"), "peak_rss_bytes": 2 ** 31, "load_warmup_median_s": 3.0}
    sd = dict(row, row="sdopt_constrained", label="sdopt", kind="sdopt", median_s=0.7,
              vs_fp32=3.0, psnr_db=34.0, prepare_cold={"optimize_cold_s": 700.0,
                                                      "optimize_warm_s": 50.0})
    peer = dict(row, row="optimum_openvino", label="ov", kind="constrained peer", median_s=1.0,
                vs_fp32=2.1, psnr_db=40.0)
    limits = {"cores": 2, "ghz": 3.0, "ghz_source": "test", "nominal_ghz": 2.6,
              "flops_per_cycle_per_core": peers_limits.FLOPS_PER_CYCLE,
              "formula": peers_limits.FORMULA, "peak_gflops": peers_limits.peaks(3.0, 2)}
    return {"preset": "sd15", "size": 512, "steps": 20, "prompt": "p", "seed": 0,
            "rounds_done": 2, "rows": [row, peer, sd], "best_peer": "optimum_openvino",
            "unet_flops": 1.0e12, "limits": limits, "notes": ["rounds cut | x"],
            "first_size_prepared": True, "device_text": "cpu", "environment_text": "default",
            "unet": [{"row": "sdopt_constrained", "precision": "bf16", "call_s": 5.0,
                      "gflops_per_s": 200.0, "fraction_of_peak": 200 / 384}],
            "profile": None}


def test_report_escapes_cells_and_checks_each_goal():
    text = peers_report.render([_result()])
    assert "fp32 \\| &lt;b&gt;" in text and "<b>" not in text
    goals = {g["goal"].split(" (")[0]: g for g in peers_report.goals([_result()])}
    assert goals["constrained >= 3x fp32 eager"]["met"] is True
    assert goals["constrained PSNR >= 35 dB"]["met"] is False
    assert goals["constrained >= 1.2x best constrained peer"]["value"] == pytest.approx(1 / 0.7)
    assert goals["UNet >= 80% of its precision's peak"]["met"] is False
    assert goals["optimize_model <= 10 min cold"]["met"] is False
    assert goals["optimize_model <= 1 min warm cache"]["met"] is True
    assert "off by" in text


def test_goals_are_those_of_the_issue_that_set_them_for_the_family_and_size():
    """sd15 at 512 px answers #8 and #20 (4x fp32, 1.8x the best of all peers, 85% of the run's
    int8 GEMM, unconstrained 12x at 26 dB); SDXL answers #18 only (2.5x fp32, 1.2x optimum-intel,
    35 dB, search peak RSS under 20 GiB), not sd15's goals; what was not run is "not measured"."""
    result = _result()
    result["unet"][0]["fraction_of_attainable_gemm"] = 0.9
    found = {(g["issue"], g["goal"].split(" (")[0]): g for g in peers_report.goals([result])}
    assert found[(20, "constrained >= 4x fp32 eager")]["met"] is False
    assert found[(20, "constrained >= 1.8x best peer")]["value"] == 0.5  # the row's vs_best_peer
    assert found[(20, "UNet >= 85% of the run's large int8 GEMM rate")]["met"] is True
    assert found[(20, "unconstrained >= 12x fp32 eager")]["met"] is None  # no such row
    assert (8, "constrained >= 3x fp32 eager") in found
    assert not any(g["issue"] == 20 for g in peers_report.goals([dict(result, size=256)]))

    sdxl = dict(_result(), family="sdxl")
    sdxl["rows"][2]["prepare_cold"]["search_peak_rss_bytes"] = 22 * 2 ** 30
    found = {g["goal"].split(" (")[0]: g for g in peers_report.goals([sdxl])}
    assert {g["issue"] for g in peers_report.goals([sdxl])} == {18}
    assert found["constrained >= 2.5x fp32 eager"]["met"] is True
    assert found["constrained >= 1.2x optimum-intel"]["value"] == pytest.approx(1 / 0.7)
    assert found["search peak RSS < 20 GiB"]["value"] == 22.0
    assert found["search peak RSS < 20 GiB"]["met"] is False
    text = peers_report.render([sdxl])
    assert "| #18 | search peak RSS &lt; 20 GiB | 22.00 GiB | 20.00 GiB | **no** (off by 1.10x) |" \
        in text


def test_pipeline_class_comes_from_the_preset_family():
    """SDXL presets run StableDiffusionXLPipeline (sdopt.models.FAMILIES, no second table); a
    family the worker cannot drive is refused in one line, before anything is built."""
    peers = _load_peers()
    assert peers.preset_family("sdxl-tiny")["pipeline_class"] == "StableDiffusionXLPipeline"
    assert peers.preset_family("sd15")["pipeline_class"] == "StableDiffusionPipeline"
    with pytest.raises(SystemExit, match="text-to-image UNet pipelines only"):
        peers.preset_family("flux-tiny")


def test_optimum_class_is_diffusers_name_with_the_prefix():
    import types

    import peers_worker

    module = types.SimpleNamespace(__name__="optimum.fake",
                                   OVStableDiffusionXLPipeline=object)
    task = {"pipeline_class": "StableDiffusionXLPipeline", "family": "sdxl"}
    assert peers_worker._optimum_class(module, "OV", task) is object
    with pytest.raises(RuntimeError, match="has no ORTStableDiffusionXLPipeline"):
        peers_worker._optimum_class(module, "ORT", task)


def test_report_gives_prepare_peaks_and_row_notes():
    import peers_worker

    result = _result()
    result["rows"][2]["prepare_cold"].update(search_peak_rss_bytes=12 * 2 ** 30)
    note = peers_worker._ov_weight_note({"unet": {"weights": 2_567_000_000, "u8": 0.999,
                                                  "f32": 0.001},
                                         "text_encoder_2": {"weights": 694_700_000, "f32": 1.0}})
    assert note == ("weights as exported: unet 2.6B weights int8 (100% of weight elements), "
                    "text_encoder_2 695M weights f32")
    result["rows"][1]["notes"] = [note]
    text = peers_report.render([result])
    assert "search peak RSS 12.0 GiB" in text
    assert f"- optimum_openvino: {note}" in text


def test_update_doc_replaces_only_the_generated_block(tmp_path):
    path = tmp_path / "b.md"
    path.write_text(f"intro\n\n{peers_report.BEGIN}\nSTALE-BLOCK\n{peers_report.END}\n\nafter\n")
    text = peers_report.update_doc(path, [_result()], "header")
    assert text.startswith("intro") and text.rstrip().endswith("after")
    assert "STALE-BLOCK" not in text


def test_html_charts_draw_offline_in_headless_chromium(tmp_path):
    """The HTML form in real Chromium: both charts per size drew, nothing was fetched, no console
    error, and a hostile row label stays text (the JSON in the page cannot close its script)."""
    from sdopt.report.html import plotly_js

    from .cdp import Browser, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the HTML charts were "
                    "not checked in a browser")
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    hostile = _result()
    hostile["rows"][0]["label"] = "fp32 </script><img src=x onerror=alert(1)>"
    small = dict(_result(), size=256)
    page = tmp_path / "peers.html"
    page.write_text(peers_report.render_html([hostile, small], str(plotly_js())))
    with Browser(chromium) as browser:
        browser.open(page.resolve().as_uri())
        browser.wait_until("document.querySelectorAll('[data-plotly-chart] svg.main-svg')"
                           ".length >= 4", timeout=60)
        state = json.loads(browser.evaluate(
            "JSON.stringify({charts: [...document.querySelectorAll('[data-plotly-chart]')]"
            ".map(d => d.id), imgs: document.images.length, "
            "cells: [...document.querySelectorAll('td')].map(t => t.textContent)})"))
        errors, urls = browser.console_errors(), browser.requested_urls()
    assert state["charts"] == ["time-256", "quality-256", "time-512", "quality-512"]
    assert state["imgs"] == 0, "the hostile label was not parsed as markup"
    assert "fp32 </script><img src=x onerror=alert(1)>" in state["cells"]
    assert errors == [], errors
    assert [u for u in urls if not u.startswith(("file:", "data:", "about:"))] == []
