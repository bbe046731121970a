"""The reports: markdown snapshots per verdict, the length cap, injection, self-contained HTML,
and the CLI. Inputs are tests/data/report, recorded from a real tiny run by
tests/report_fixtures.py (re-record with ``python -m tests.report_fixtures tests/data/report``,
then refresh snapshots with ``SDOPT_UPDATE_SNAPSHOTS=1``)."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdopt.cli import main
from sdopt.report import build_context, fmt, load_results, load_verdict, render_markdown, \
    render_reports
from sdopt.report.markdown import MARKER, MAX_CHARS, escape

DATA = Path(__file__).parents[1] / "data" / "report"
SNAPSHOTS = Path(__file__).parents[1] / "snapshots"
SCENARIOS = ("pass", "regression", "not_comparable")


@pytest.fixture(scope="module")
def recorded():
    current, cur_dir = load_results(DATA / "current")
    baseline, base_dir = load_results(DATA / "baseline")
    verdicts = {s: load_verdict(DATA / f"verdict-{s}.json") for s in SCENARIOS}
    return current, cur_dir, baseline, base_dir, verdicts


def _markdown(current, cur_dir, baseline=None, base_dir=None, verdict=None, **kw):
    return render_markdown(build_context(current, cur_dir, baseline=baseline,
                                         baseline_dir=base_dir, verdict=verdict, html=False, **kw))


def _tables(text: str) -> list[list[str]]:
    """Markdown table blocks as lists of lines."""
    blocks, block = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    return blocks + ([block] if block else [])


def _cells(line: str) -> int:
    """Table cells in a row: pipes not escaped with a backslash."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_markdown_snapshot(recorded, scenario):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    text = _markdown(current, cur_dir, baseline, base_dir, verdicts[scenario],
                     artifact_url="https://github.com/o/r/actions/runs/1/artifacts/2")
    snapshot = SNAPSHOTS / f"report-{scenario}.md"
    if os.environ.get("SDOPT_UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(text, encoding="utf-8")
    assert text == snapshot.read_text(encoding="utf-8"), \
        f"markdown differs from {snapshot} (SDOPT_UPDATE_SNAPSHOTS=1 to accept on purpose)"
    assert text.startswith(MARKER + "\n")
    label = {"pass": "pass", "regression": "regression", "not_comparable": "not comparable"}
    assert text.splitlines()[1].startswith("## ") and label[scenario] in text.splitlines()[1]
    for table in _tables(text):
        assert len({_cells(line) for line in table}) == 1, table


def test_markdown_numbers_are_the_results(recorded):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    verdict = verdicts["regression"]
    text = _markdown(current, cur_dir, baseline, base_dir, verdict)
    o = current["variants"]["original"]["latency_s"]["median"]
    s = current["variants"]["optimized"]["latency_s"]["median"]
    assert f"**{fmt.ratio(o / s)}** faster (end to end)" in text
    assert fmt.seconds(s) in text and fmt.seconds(o) in text
    assert "Latency decided by **" + ", ".join(verdict["latency"]["decided_by"]) + "**" in text
    for check in verdict["latency"]["checks"]:  # every comparison with its own numbers
        assert f"| {check['name']} |" in text and fmt.ratio(check["change"], 3) in text
        assert fmt.ratio(check["allowed"], 3) in text
    regressed = [i for i in verdict["quality"]["images"] if i["regressed"]]
    assert regressed, "the regression scenario has regressed images"
    assert "### Regressions" in text
    for img in regressed:
        assert fmt.db(img["psnr_db"]) in text and fmt.number(img["ssim"], 4) in text
    for c in current["optimization"]["candidates"]:
        assert escape(c["id"]) in text
    assert "### Regressions" not in _markdown(current, cur_dir, baseline, base_dir,
                                              verdicts["pass"])


def test_markdown_without_verdict_or_baseline(recorded):
    current, cur_dir, *_ = recorded
    text = _markdown(current, cur_dir)
    assert text.startswith(MARKER) and "no verdict" in text.splitlines()[1]
    assert "Against the baseline" not in text
    assert "report.html" in text  # no artifact URL: says where the full report is


def test_length_cap_with_hundreds_of_candidates(recorded):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    big = copy.deepcopy(current)
    real = big["optimization"]["candidates"]
    many = []
    for i in range(600):
        c = copy.deepcopy(real[i % len(real)])
        c["id"] = f"{c['id']}-variant{i}"
        c["reason"] = (c["reason"] or "measured") + " | details " * 40
        many.append(c)
    big["optimization"]["candidates"] = many
    text = _markdown(big, cur_dir, baseline, base_dir, verdicts["regression"],
                     artifact_url="https://example.invalid/report")
    assert len(text) <= MAX_CHARS
    assert text.startswith(MARKER) and "regression" in text.splitlines()[1]
    assert "| latency per image (median ± IQR) |" in text  # the summary table survived
    assert "shortened to fit GitHub's 65,536-character limit" in text
    assert "more candidates (see the HTML report)" in text
    assert "https://example.invalid/report" in text
    # and a report that fits is not shortened
    assert "shortened" not in _markdown(current, cur_dir, baseline, base_dir,
                                        verdicts["regression"])


def test_length_cap_holds_for_one_enormous_field(recorded):
    current, cur_dir, *_ = recorded
    big = copy.deepcopy(current)
    big["config"]["model"] = "m" * 200_000
    verdict = {"schema_version": 1, "kind": "sdopt-verdict", "verdict": "regression",
               "reasons": ["r" * 100_000] * 50,
               "baseline": {"source": "s" * 100_000, "environment_match": True}}
    text = _markdown(big, cur_dir, verdict=verdict)
    assert len(text) <= MAX_CHARS and text.startswith(MARKER)


EVIL = "<script>alert(1)</script> | `rm -rf` @octocat [x](javascript:alert(1))\n# heading"


def _poisoned(current: dict) -> dict:
    doc = copy.deepcopy(current)
    doc["config"]["model"] = EVIL
    doc["config"]["prompts"] = [EVIL]
    for v in doc["variants"].values():
        v["label"] = EVIL
        v["techniques"] = [EVIL]
        for img in v["images"]:
            img["prompt"] = EVIL
    doc["optimization"]["candidates"][0]["id"] = EVIL + "</script><script>alert(2)</script>"
    doc["optimization"]["candidates"][-1]["reason"] = EVIL
    doc["environment"]["device"]["name"] = EVIL
    return doc


def test_markdown_injection(recorded, tmp_path):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    verdict = copy.deepcopy(verdicts["regression"])
    verdict["reasons"].append(EVIL)
    for img in verdict["quality"]["images"]:
        img["prompt"] = EVIL
    verdict["baseline"]["source"] = EVIL
    text = _markdown(_poisoned(current), cur_dir, baseline, base_dir, verdict,
                     image_base_url="https://example.invalid/run/1")
    assert "<script" not in text and "</script" not in text
    assert "@octocat" not in text and "@\u200boctocat" in text
    assert not re.search(r"(?<!\\)`", text.replace("`report.html`", "")), "unescaped backtick"
    assert not re.search(r"(?<!\\)\]\(javascript", text) and "\n# heading" not in text
    for table in _tables(text):
        assert len({_cells(line) for line in table}) == 1, table
    assert escape("a|b") == "a\\|b" and escape("x\ny") == "x y"


SHA = "a5c3785ed8d6a35868bc169f07e40e889087fd2e"
# GitHub's autolinked references (docs.github.com, "Autolinked references and URLs"), mid-line.
REFERENCES = (f"fixes #1, see owner/repo#5 and GH-3 gh-4, commit {SHA} (or {SHA[:7]}), "
              f"octo@{SHA[:12]} and www.example.com")
# What GitHub would link in the text, when nothing breaks it.
_LIVE = re.compile(r"(?<![\w/])#\d|[\w.-]+/[\w.-]+#\d|\bGH-\d|(?<![0-9a-f])[0-9a-f]{7,40}"
                   r"(?![0-9a-f])|\bwww\.", re.IGNORECASE)


def test_github_references_in_user_text_stay_inert():
    text = escape(REFERENCES)
    assert not _LIVE.search(text), _LIVE.findall(text)
    assert text.replace("\u200b", "") == REFERENCES  # reads the same
    assert escape("#12 at the start").replace("\u200b", "") == "\\#12 at the start"
    assert escape("a cat, 42 steps, colour #fff") == "a cat, 42 steps, colour #fff"


def test_markdown_report_with_references_in_prompts(recorded):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    doc = copy.deepcopy(current)
    doc["config"]["prompts"] = [REFERENCES]
    for v in doc["variants"].values():
        for img in v["images"]:
            img["prompt"] = REFERENCES
    verdict = copy.deepcopy(verdicts["regression"])
    verdict["reasons"].append(REFERENCES)
    for img in verdict["quality"]["images"]:
        img["prompt"] = REFERENCES
    text = _markdown(doc, cur_dir, baseline, base_dir, verdict)
    assert "owner/repo#\u200b5" in text and "GH\u200b-3" in text and SHA not in text
    assert "www.example.com" not in text and "#1," not in text


def test_html_injection_and_path_traversal(recorded, tmp_path):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    doc = _poisoned(current)
    doc["variants"]["optimized"]["images"][0]["path"] = "../../../../etc/passwd"
    verdict = copy.deepcopy(verdicts["regression"])
    verdict["reasons"].append(EVIL)
    out = tmp_path / "r.html"
    render_reports(doc, cur_dir, baseline=baseline, baseline_dir=base_dir, verdict=verdict,
                   html_path=out)
    html = out.read_text(encoding="utf-8")
    body = html.split("<script>", 1)[0] + html.rsplit("</script>", 1)[-1]
    assert "<script>alert" not in html and "alert(2)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "refused: the path leaves the results directory" in html
    assert "root:x:0:0" not in html


def test_html_is_self_contained(recorded, tmp_path):
    current, cur_dir, baseline, base_dir, verdicts = recorded
    out = tmp_path / "report.html"
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir,
                   verdict=verdicts["pass"], html_path=out, history=[baseline])
    html = out.read_text(encoding="utf-8")
    plotly_js = max(re.findall(r"<script>(.*?)</script>", html, re.S), key=len)
    assert len(plotly_js) > 3_000_000  # plotly.js is inside, not fetched
    html = html.replace(plotly_js, "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no remote resource"
    srcs = re.findall(r'<img src="([^"]+)"', html)
    n_images = sum(len(v["images"]) for v in current["variants"].values())
    assert len(srcs) >= n_images and all(s.startswith("data:image/") for s in srcs)
    for chart in ("chart-speedup", "chart-latency", "chart-stages", "chart-trend"):
        assert f'data-chart="{chart}"' in html
    assert "Plotly.newPlot" in html
    for c in current["optimization"]["candidates"]:
        assert c["status"] in html
        if c["reason"]:
            assert c["reason"].split(":")[0] in html


def test_cli_writes_both_reports(recorded, tmp_path):
    html, md = tmp_path / "out" / "report.html", tmp_path / "out" / "report.md"
    result = CliRunner().invoke(main, [
        "report", str(DATA / "current"), "--baseline", str(DATA / "baseline"),
        "--verdict", str(DATA / "verdict-pass.json"), "--html", str(html), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert html.is_file() and md.read_text(encoding="utf-8").startswith(MARKER)
    assert "html report:" in result.output


@pytest.mark.parametrize("args, message", [
    (["{missing}", "--markdown", "x.md"], "not found"),
    (["{data}/current", "--verdict", "{data}/current/results.json", "--markdown", "x.md"],
     "is not an sdopt verdict file"),
    (["{data}/current"], "nothing to write"),
    (["{data}/current", "--markdown", "x.md", "--artifact-url", "javascript:alert(1)"],
     "not an http(s) URL"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    args = [a.format(missing=tmp_path / "nope", data=DATA) for a in args]
    result = CliRunner().invoke(main, ["report", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_corrupt_results_names_the_file(tmp_path):
    (tmp_path / "results.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--markdown", "x.md"])
    assert result.exit_code == 2 and "results.json" in result.output


def test_heat_map_and_metrics_of_real_images(recorded):
    import numpy as np

    from sdopt.optimize.metrics import psnr_db, ssim_drop
    from sdopt.report.images import compare, heat_map, load_image

    current, cur_dir, *_ = recorded
    a = load_image(cur_dir, current["variants"]["original"]["images"][0]["path"])
    b = load_image(cur_dir, current["variants"]["optimized"]["images"][0]["path"])
    same = compare(a, a)
    assert same.psnr_db == float("inf") and same.ssim == 1.0 and same.max_abs == 0
    black = heat_map(a.array, a.array)
    assert (black == black[0, 0]).all() and black.max() <= 4  # identical: all black
    diff = compare(a, b)
    expected = np.abs(a.array.astype(int) - b.array.astype(int)).max()
    assert diff.max_abs == expected
    # the search's and the gate's code, not a copy: the same numbers exactly
    assert diff.psnr_db == psnr_db(a.array, b.array)
    assert diff.ssim == 1.0 - ssim_drop(a.array, b.array)
    assert compare(a.array, b.array) == diff           # arrays work as well as loaded images
    if expected:
        assert diff.psnr_db < float("inf")
    tiny = compare(a.array[:5, :5], b.array[:5, :5])   # under SSIM's 7 px window: still a value
    assert tiny.ssim is not None and tiny.ssim == 1.0 - ssim_drop(a.array[:5, :5], b.array[:5, :5])


def test_identical_images_read_as_identical(recorded, tmp_path):
    """JSON has no infinity: a verdict records identical images as psnr_db null, and both
    reports show them as identical rather than as a missing value."""
    current, cur_dir, baseline, base_dir, verdicts = recorded
    verdict = copy.deepcopy(verdicts["regression"])
    image = verdict["quality"]["images"][0]
    image.update(psnr_db=None, ssim=1.0, regressed=True)   # (a CLIP threshold could say so)
    text = _markdown(current, cur_dir, baseline, base_dir, verdict)
    start = f"| {escape(image['prompt'])} |"
    row = next(line for line in text.splitlines() if line.startswith(start))
    assert "∞ dB (identical)" in row
    out = tmp_path / "r.html"
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir, verdict=verdict,
                   html_path=out)
    assert "PSNR ∞ dB (identical)" in out.read_text(encoding="utf-8")
    assert fmt.db(float("inf")) == "∞ dB (identical)" and fmt.db(None) == fmt.DASH
