"""Number formatting shared by the HTML and markdown reports.

One place decides how a latency or a size is written, so the PR comment and the HTML artifact
never disagree about the same number. Missing values (optional fields of results.json, a
candidate that failed before it was timed) print as an en dash instead of raising.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

DASH = "–"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def seconds(value) -> str:
    x = _number(value)
    if x is None:
        return DASH
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.3f} s" if x < 100 else f"{x:.1f} s"


def size(value) -> str:
    x = _number(value)
    if x is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return DASH  # pragma: no cover


def ratio(value, digits: int = 2) -> str:
    x = _number(value)
    return DASH if x is None else f"{x:.{digits}f}x"


def number(value, digits: int = 4) -> str:
    x = _number(value)
    if x is None:
        if isinstance(value, float) and math.isinf(value):
            return "∞"
        return DASH
    return f"{x:.{digits}g}"


def rate(value) -> str:
    x = _number(value)
    return DASH if x is None else f"{x:.3g}/s"


def db(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "∞ dB (identical)"
    x = _number(value)
    return DASH if x is None else f"{x:.2f} dB"


def percent_change(new, old) -> str:
    a, b = _number(new), _number(old)
    if a is None or b is None or b == 0:
        return ""
    return f"{(a / b - 1) * 100:+.0f}%"


def timestamp(unix) -> str:
    x = _number(unix)
    if x is None:
        return DASH
    return datetime.fromtimestamp(x, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def p_value(value) -> str:
    x = _number(value)
    if x is None:
        return "n/a"
    return f"{x:.2g}" if x >= 1e-4 else "< 0.0001"
