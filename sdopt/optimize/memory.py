"""The peak resident memory (RSS) of the search and of each candidate in it.

A full SDXL UNet is 10 GB in fp32: what a search needs in memory decides whether it fits a
runner at all, so the table reports it. Linux keeps the process's exact high-water mark
(``VmHWM`` in ``/proc/self/status``, also ``getrusage``'s ``ru_maxrss``) and lets the process
reset it (writing ``5`` to ``/proc/self/clear_refs``, Linux 4.0+): a span reads the mark at its
end after resetting it at its start, with no sampling thread and nothing missed between samples.
Spans nest: before a reset, every open span takes the mark so far, so an inner span (a
candidate) never hides a peak from an outer one (the search).

Where the mark cannot be reset (another OS, a locked-down /proc), a span's peak is the
process's peak since it started (``ru_maxrss``): an upper bound, marked ``exact=False``, and
candidates get none.
"""

from __future__ import annotations

import re
import sys
import threading

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)
_lock = threading.Lock()
_open: list["PeakRss"] = []
_before_resets = 0  # the highest mark read before a reset: the process's peak survives them


def _high_water_mark() -> int | None:
    """The process's peak RSS in bytes since it started or since the last reset."""
    try:
        with open(_STATUS, encoding="ascii", errors="replace") as f:
            found = _HWM.search(f.read())
        if found:
            return int(found.group(1)) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, kB else


def _fold(value: int | None) -> None:
    """Every open span's peak is at least ``value``."""
    for span in _open:
        span.peak = max(span.peak or 0, value or 0) or None


def _reset() -> bool:
    """Fold the mark into the open spans, then reset it (False: it cannot be reset here)."""
    global _before_resets
    mark = _high_water_mark()
    _fold(mark)
    _before_resets = max(_before_resets, mark or 0)
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_peak_rss() -> int | None:
    """The process's peak RSS since it started, in bytes, across the resets the spans made
    (``ru_maxrss`` alone would only go back to the last reset)."""
    with _lock:
        return max(_before_resets, _high_water_mark() or 0) or None


def current_rss() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - memory figures are informative, never fatal
        return None


class PeakRss:
    """``with PeakRss() as span: ...`` then ``span.peak``: the process's peak RSS in bytes
    while the block ran (``span.exact`` False: the process's peak since it started)."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self.exact = False

    def start(self) -> "PeakRss":
        with _lock:
            self.exact = _reset()
            self.peak = current_rss() if self.exact else None
            _fold(self.peak)  # the kernel's mark can lag the live counters a little
            _open.append(self)
        return self

    def stop(self) -> int | None:
        """The peak, or None where it is not this span's own (``exact`` False)."""
        with _lock:
            if self in _open:
                _open.remove(self)
            self.peak = max(self.peak or 0, _high_water_mark() or 0) or None
            _fold(self.peak)
        return self.peak if self.exact else None

    def __enter__(self) -> "PeakRss":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def shortfall_reason(copies: float | None, weights_bytes: int,
                     available_bytes: int | None) -> str | None:
    """Why a candidate needing ``copies`` of ``weights_bytes`` more memory cannot be built with
    ``available_bytes`` free (None: it fits, or either figure is unknown)."""
    if copies is None or available_bytes is None or not weights_bytes:
        return None
    need = copies * weights_bytes
    if need <= available_bytes:
        return None
    return (f"needs about {need / 2**30:.1f} GiB more memory ({copies:g} x the "
            f"{weights_bytes / 2**30:.1f} GiB of fp32 weights, measured) and "
            f"{available_bytes / 2**30:.1f} GiB is available: building it would stall the "
            "machine or get the search killed")
