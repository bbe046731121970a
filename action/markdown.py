"""A compact markdown report, used when ``sdopt.report`` (the full report) is not installed.

Also the escaping rule for anything a user or a fork controls (prompts, model names, reasons):
such text must not open HTML, break a table, start code, or ping people.
"""

from __future__ import annotations

import html
from typing import Any

VERDICT_LINE = {
    "pass": ":white_check_mark: **sdopt gate: pass**",
    "regression": ":x: **sdopt gate: regression**",
    "not_comparable": ":warning: **sdopt gate: not comparable**",
}


def escape(text: Any) -> str:
    """Inline-safe markdown: HTML escaped, table pipes, backticks and @mentions neutralised."""
    out = html.escape(" ".join(str(text).split()), quote=False)
    for ch in ("\\", "`", "*", "_", "[", "]", "|", "#", "~"):
        out = out.replace(ch, "\\" + ch)
    return out.replace("@", "@\u200b")


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else "n/a"


def speedup(results: dict | None) -> float | None:
    """Original median latency over optimized median latency, from a results.json."""
    variants = (results or {}).get("variants") or {}
    try:
        orig = variants["original"]["latency_s"]["median"]
        opt = variants["optimized"]["latency_s"]["median"]
    except (KeyError, TypeError):
        return None
    if isinstance(orig, (int, float)) and isinstance(opt, (int, float)) and opt > 0:
        return orig / opt
    return None


def render(results: dict | None, verdict: dict | None, *, artifact_url: str | None = None) -> str:
    lines = []
    state = (verdict or {}).get("verdict")
    lines.append(VERDICT_LINE.get(state, "**sdopt results**"))
    lines.append("")
    for reason in (verdict or {}).get("reasons") or []:
        lines.append(f"- {escape(reason)}")
    if (verdict or {}).get("reasons"):
        lines.append("")
    variants = (results or {}).get("variants") or {}
    if variants:
        lines += ["| variant | backend | median latency (s/image) | IQR (s) | images/s |",
                  "|---|---|---:|---:|---:|"]
        for name, v in variants.items():
            v = v if isinstance(v, dict) else {}
            lat = v.get("latency_s") if isinstance(v.get("latency_s"), dict) else {}
            lines.append(f"| {escape(v.get('label') or name)} | {escape(v.get('backend', ''))} | "
                         f"{_num(lat.get('median'), '.4f')} | {_num(lat.get('iqr'), '.4f')} | "
                         f"{_num(v.get('throughput_images_per_s'), '.3f')} |")
        ratio = speedup(results)
        if ratio is not None:
            lines += ["", f"Speedup of the optimized pipeline, end to end: **{ratio:.2f}x**"]
    latency = (verdict or {}).get("latency")
    if isinstance(latency, dict) and latency.get("ratio") is not None:
        lines += ["", f"Latency vs baseline: {_num(latency.get('ratio'), '.3f')}x "
                      f"(tolerance {_num(latency.get('tolerance'), '.3f')}, "
                      f"p = {_num(latency.get('p_value'), '.3g')}, "
                      f"{escape(latency.get('test', ''))})"]
    if artifact_url:
        lines += ["", f"[Full report (HTML)]({html.escape(artifact_url, quote=True)})"]
    return "\n".join(lines) + "\n"
