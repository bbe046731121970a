"""The search's tables in a CI log (200 columns, no terminal): every candidate id, drop and
end-to-end figure is printed whole, with all the columns of a full search."""

import io

from rich.console import Console

from sdopt.optimize.search import OptimizationResult
from sdopt.optimize.summary import print_summary
from sdopt.optimize.table import CandidateResult

IDS = ("torch_eager/fp32", "openvino/int8-inner+vae_bf16+step_cache_3+tome_0.3",
       "torch_compile/fp16-max-autotune")


def _result() -> OptimizationResult:
    rows = []
    for cid in IDS:
        backend, variant = cid.split("/")
        row = CandidateResult(
            cid, backend, variant, "int8", [], "ok", build_s=1234.5, latency_s=0.01234,
            latency_iqr_s=0.00041, peak_memory_bytes=12_345_678_901, metric_drop=0.002565,
            metric_drop_max=0.002585, speedup=13.21, e2e_latency_s=12.345, e2e_speedup=12.5,
            image_metrics={"psnr": {"mean": 0.012565, "max": 0.012585, "db": 38.2},
                           "ssim": {"mean": 0.0123}},
            peak_rss_bytes=23_456_789_012)
        row.paired = {level: {"speedup": x, "rounds": 8, "q1": x - 0.1, "q3": x + 0.1,
                              "reference_latency_s": 1.0, "latency_s": 1.0 / x}
                      for level, x in (("unet", 13.2), ("e2e", 12.4))}
        rows.append(row)
    return OptimizationResult({}, "psnr", 0.05, "unconstrained", {}, rows, rows[0], rows[1],
                              image_metric="psnr")


def test_a_ci_log_shows_every_cell_whole():
    console = Console(width=200, record=True, file=io.StringIO())
    print_summary(_result(), console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 200
    for cid in IDS:
        assert text.count(cid) >= 2, cid  # the candidates table and the end-to-end table
    for cell in ("0.002565 / 0.002585", "0.01256 / 0.01259", "22,370.1 MB", "12.345 s", "12.50x",
                 "13.20x UNet, 12.40x e2e", "38.2"):
        assert cell in text, cell
