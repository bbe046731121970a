"""Fan-in for a CI matrix: several result directories (one per GPU type, model or runner pool)
become one verdict and one markdown report, so a pull request gets a single comment and the
workflow a single pass/fail however many machines measured it.

Each leg is a directory written by ``sdopt gate`` or ``sdopt bench`` (results.json, optionally
verdict.json and report.md), usually a downloaded artifact. The merged verdict is the worst leg's:
regression > not comparable > pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SdoptError

MERGED_KIND = "sdopt-merged-results"
MERGED_SCHEMA_VERSION = 1
SEVERITY = {"pass": 0, "not_comparable": 1, "regression": 2}
VERDICT_TITLE = {"pass": "pass", "not_comparable": "not comparable", "regression": "regression"}


@dataclass
class Leg:
    name: str
    directory: Path
    results: dict[str, Any]
    verdict: dict[str, Any] | None

    @property
    def state(self) -> str | None:
        return (self.verdict or {}).get("verdict")

    @property
    def device(self) -> str:
        device = ((self.results.get("environment") or {}).get("device") or {})
        return str(device.get("name") or device.get("kind") or "unknown device")

    def median(self, variant: str) -> float | None:
        v = (self.results.get("variants") or {}).get(variant) or {}
        value = (v.get("latency_s") or {}).get("median")
        return value if isinstance(value, (int, float)) else None

    @property
    def speedup(self) -> float | None:
        orig, opt = self.median("original"), self.median("optimized")
        return orig / opt if orig and opt else None


def _read_verdict(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"verdict '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != "sdopt-verdict" \
            or data.get("verdict") not in SEVERITY:
        raise SdoptError(f"verdict '{path}' is not an sdopt verdict: expected \"kind\": "
                         "\"sdopt-verdict\" and a verdict of pass, regression or not_comparable")
    return data


def load_legs(directories: list[str | os.PathLike]) -> list[Leg]:
    from .bench import read_results

    if not directories:
        raise SdoptError("no result directory given: pass one directory per matrix leg")
    legs: list[Leg] = []
    for directory in directories:
        path = Path(directory)
        if not path.is_dir():
            raise SdoptError(f"result directory '{path}' not found: expected a directory "
                             "written by 'sdopt gate' or 'sdopt bench'")
        name = path.resolve().name
        if any(leg.name == name for leg in legs):
            raise SdoptError(f"two result directories are named '{name}': each matrix leg "
                             "needs its own directory name (it labels the leg in the report)")
        legs.append(Leg(name, path, read_results(path), _read_verdict(path / "verdict.json")))
    return legs


def merged_verdict(legs: list[Leg]) -> dict[str, Any] | None:
    judged = [leg for leg in legs if leg.state]
    if not judged:
        return None
    worst = max(judged, key=lambda leg: SEVERITY[leg.state]).state
    reasons = [f"{leg.name}: {reason}" for leg in judged
               for reason in (leg.verdict.get("reasons") or [])]
    return {"schema_version": 1, "kind": "sdopt-verdict", "verdict": worst, "reasons": reasons,
            "legs": {leg.name: leg.state for leg in judged}}


def _md(text: Any) -> str:
    """Inline markdown for names that come from directories and result files."""
    import html

    out = html.escape(" ".join(str(text).split()), quote=False)
    for ch in ("\\", "`", "*", "_", "[", "]", "|", "#", "~"):
        out = out.replace(ch, "\\" + ch)
    return out.replace("@", "@\u200b")


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _leg_report(leg: Leg) -> str | None:
    try:
        from ..report import render_reports
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "report.md"
        render_reports(leg.results, leg.directory, baseline=None, baseline_dir=None,
                       verdict=leg.verdict, html_path=None, markdown_path=md)
        return md.read_text(encoding="utf-8")


def merged_markdown(legs: list[Leg], verdict: dict[str, Any] | None) -> str:
    state = (verdict or {}).get("verdict")
    head = f"**sdopt: {VERDICT_TITLE[state]}**" if state else "**sdopt results**"
    lines = [f"{head} across {len(legs)} jobs", "",
             "| job | device | original (s/image) | optimized (s/image) | speedup | verdict |",
             "|---|---|---:|---:|---:|---|"]
    for leg in legs:
        lines.append(f"| {_md(leg.name)} | {_md(leg.device)} | "
                     f"{_fmt(leg.median('original'), '.4f')} | "
                     f"{_fmt(leg.median('optimized'), '.4f')} | "
                     f"{_fmt(leg.speedup, '.2f', 'x')} | "
                     f"{_md(VERDICT_TITLE.get(leg.state, 'n/a'))} |")
    reasons = (verdict or {}).get("reasons") or []
    if reasons:
        lines += [""] + [f"- {_md(r)}" for r in reasons]
    for leg in legs:
        body = _leg_report(leg)
        if body:
            lines += ["", f"<details><summary>{_md(leg.name)}</summary>", "", body.strip(), "",
                      "</details>"]
    return "\n".join(lines) + "\n"


def merge(directories: list[str | os.PathLike], out: str | os.PathLike, *,
          overwrite: bool = False) -> dict[str, Any] | None:
    """Write ``out``/merged.json, verdict.json (when any leg was judged) and report.md."""
    from .. import __version__
    from ..store import atomic_directory, atomic_write_text, write_json

    legs = load_legs(directories)
    verdict = merged_verdict(legs)
    markdown = merged_markdown(legs, verdict)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_json(tmp / "merged.json", {
            "schema_version": MERGED_SCHEMA_VERSION, "kind": MERGED_KIND,
            "sdopt_version": __version__,
            "verdict": (verdict or {}).get("verdict"),
            "legs": [{"name": leg.name, "results_dir": str(leg.directory), "device": leg.device,
                      "verdict": leg.state, "speedup": leg.speedup,
                      "original_median_s": leg.median("original"),
                      "optimized_median_s": leg.median("optimized")} for leg in legs]})
        if verdict is not None:
            write_json(tmp / "verdict.json", verdict)
        atomic_write_text(tmp / "report.md", markdown)
    return verdict
