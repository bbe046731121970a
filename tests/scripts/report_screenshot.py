"""Render the report of a results directory and screenshot it in headless Chromium
(docs/report-screenshot.png). Usage:
python -m tests.scripts.report_screenshot RESULTS_DIR BASELINE_DIR VERDICT OUT.png [MAX_HEIGHT]"""

import sys
import tempfile
from pathlib import Path

from sdopt.report import load_results, load_verdict, render_reports
from tests.cdp import Browser, find_chromium


def main(results, baseline, verdict, out, max_height=2600):
    cur, cur_dir = load_results(results)
    base, base_dir = load_results(baseline)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        render_reports(cur, cur_dir, baseline=base, baseline_dir=base_dir,
                       verdict=load_verdict(verdict), html_path=html, history=[base])
        with Browser(find_chromium(), width=1280, height=900) as browser:
            browser.open(html.as_uri())
            browser.wait_until("document.querySelectorAll('[data-plotly-chart] svg.main-svg')"
                               ".length >= document.querySelectorAll('[data-plotly-chart]').length")
            browser.screenshot(Path(out), max_height=int(max_height))
            assert not browser.console_errors(), browser.console_errors()


if __name__ == "__main__":
    main(*sys.argv[1:])
