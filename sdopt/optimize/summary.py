"""The terminal tables: Speedster's summary (original vs optimized) and every candidate.

A candidate's reason (why it was skipped, rejected or failed) is printed under the candidates
table, one line each, not in a column: in a CI log (no terminal, 200 columns) the numeric columns
left a reason column no width at all, and rich cut it away; a line wraps instead."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .table import (BASE_LEVEL, STATUS_FAILED, STATUS_REJECTED, STATUS_SELECTED, STATUS_SKIPPED,
                     OptimizationResult)

_STYLE = {STATUS_SELECTED: "bold green", STATUS_REJECTED: "yellow", STATUS_FAILED: "red",
          STATUS_SKIPPED: "dim"}


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MB"


def _sec(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.3f} s"


def _drop(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def summary_table(result: OptimizationResult) -> Table:
    o, s = result.original, result.selected
    shapes = result.samples.get("sample_shape")
    table = Table(title=f"[bold]sdopt results[/] on {result.device.get('name')} "
                        f"({result.device.get('kind')}), UNet input {shapes}",
                  title_justify="left")
    for col, justify in (("Metric", "left"), ("Original Model", "right"),
                         ("Optimized Model", "right"), ("Improvement", "right")):
        table.add_column(col, justify=justify)
    if not (o and s):
        table.add_row("status", "-", "no candidate completed", "")
        return table
    table.add_row("backend", "PyTorch fp32 (eager)", f"{s.backend} {s.variant}", "")
    unet = s.paired.get("unet")
    if unet:  # the figures of the side-by-side rounds, not the search's sequential ones
        table.add_row("latency", f"{_sec(unet['reference_latency_s'])}/batch",
                      f"{_sec(unet['latency_s'])}/batch", _paired(unet))
        table.add_row("throughput", f"{1 / unet['reference_latency_s']:.2f} batch/s",
                      f"{1 / unet['latency_s']:.2f} batch/s", f"{unet['speedup']:.2f}x")
    elif s.latency_s:
        speed = o.latency_s / s.latency_s
        table.add_row("latency (search, sequential)", f"{_sec(o.latency_s)}/batch",
                      f"{_sec(s.latency_s)}/batch", f"[bold]{speed:.2f}x[/]")
    e2e, size = s.paired.get("e2e"), result.end_to_end
    what = (f"end to end ({size.get('steps')} steps, {size.get('width')}x"
            f"{size.get('height')})")
    if e2e:
        table.add_row(what, f"{_sec(e2e['reference_latency_s'])}/image",
                      f"{_sec(e2e['latency_s'])}/image", _paired(e2e))
    elif o.e2e_latency_s and s.e2e_latency_s:
        table.add_row(what + " (search, sequential)", f"{_sec(o.e2e_latency_s)}/image",
                      f"{_sec(s.e2e_latency_s)}/image",
                      f"[bold]{o.e2e_latency_s / s.e2e_latency_s:.2f}x[/]")
    for name, value in s.image_metrics.items():
        text = f"{_drop(value['mean'])} drop"
        if value.get("db") is not None:
            text += f" ({value['db']:.1f} dB)"
        if value.get("max") is not None:
            text += f", worst image {_drop(value['max'])}"
        table.add_row(f"image {name}", "", text, "")
    size_change = ""
    if o.model_size_bytes and s.model_size_bytes:
        size_change = f"{(s.model_size_bytes / o.model_size_bytes - 1) * 100:+.0f}%"
    table.add_row("model size", _mb(o.model_size_bytes), _mb(s.model_size_bytes), size_change)
    if s.metric_drop is not None:
        # Judged on images, the UNet outputs are still compared, with numeric_precision.
        unet_metric = ("numeric_precision" if result.image_metric == result.metric
                       else result.metric)
        table.add_row("metric drop", "", f"{_drop(s.metric_drop)} mean, "
                      f"{_drop(s.metric_drop_max)} worst prompt ({unet_metric})", "")
    table.add_row("techniques", "", ", ".join(s.techniques) or "none", "")
    if result.peak_rss_bytes:
        table.add_row(*peak_rss_row(result))
    return table


def peak_rss_row(result: OptimizationResult) -> tuple[str, str, str, str]:
    """The search's peak resident memory, against the memory it may use (RAM or container limit)."""
    from ..host_memory import memory_limit

    scope = ("process peak since start (could not be measured for the search alone)"
             if result.peak_rss_scope == "process" else "whole search")
    limit = memory_limit()
    share = (f"{result.peak_rss_bytes / limit[0] * 100:.0f}% of {limit[0] / 2**30:.0f} GiB "
             f"{limit[1]}" if limit else "")
    return "peak RSS (search)", "", f"{_mb(result.peak_rss_bytes)} ({scope})", share


def _paired(ratio: dict) -> str:
    """A side-by-side speedup with its spread: what the rounds measured."""
    where = "side by side in the image rounds" if ratio.get("in_image_rounds") else "side by side"
    return (f"[bold]{ratio['speedup']:.2f}x[/] ({where}, {ratio['rounds']} rounds, "
            f"IQR {ratio['q1']:.2f}-{ratio['q3']:.2f}x)")


def candidates_table(result: OptimizationResult) -> Table:
    table = Table(title=f"All candidates (metric: {result.metric}, allowed drop "
                        f"{allowed(result)}; latency is the median of one UNet call in the "
                        "search, candidates timed one after another (sequential), iqr its "
                        "spread; 'side by side' re-timed alternating with the original; drops "
                        "are mean / worst prompt; peak mem: during the timed calls; peak RSS: "
                        "the process's while the candidate was built, checked and timed; "
                        "reasons below)",
                  title_justify="left")
    columns = [
        ("candidate", lambda c: c.id),
        ("status", lambda c: f"[{_STYLE[c.status]}]{c.status}[/]" if c.status in _STYLE
         else c.status),
        ("build", lambda c: "-" if c.build_s is None else f"{c.build_s:.1f} s"),
        ("latency", lambda c: _sec(c.latency_s)),
        ("iqr", lambda c: _sec(c.latency_iqr_s)),
        ("speedup (seq.)", lambda c: "-" if c.speedup is None else f"{c.speedup:.2f}x"),
        ("side by side", lambda c: _side_by_side(c.paired)),
        ("drop", lambda c: "-" if c.metric_drop is None
         else f"{_drop(c.metric_drop)} / {_drop(c.metric_drop_max)}"),
        _memory_column(result.candidates),
        ("peak RSS", lambda c: _mb(c.peak_rss_bytes)),
    ]
    return _filled(table, columns, result.candidates)


def end_to_end_table(result: OptimizationResult) -> Table | None:
    """The candidates measured end to end (whole pipeline, per image) and their images' metrics;
    None when nothing was (end_to_end=False). A table of its own: with the UNet-level columns
    in one table, a 200-column CI log cut the candidate ids and the drops."""
    measured = [c for c in result.candidates if c.e2e_latency_s is not None]
    if not measured:
        return None
    image = result.image_metric or "psnr"
    table = Table(title=f"End to end (whole pipeline, per image; {image} drop mean / worst "
                        "prompt against the original's images)", title_justify="left")
    columns = [
        ("candidate", lambda c: c.id),
        ("e2e/image", lambda c: _sec(c.e2e_latency_s)),
        ("e2e speedup (seq.)", lambda c: "-" if c.e2e_speedup is None else f"{c.e2e_speedup:.2f}x"),
        (f"{image} drop", lambda c: _mean_worst(c.image_metrics.get(image))),
        ("psnr dB", lambda c: _db(c.image_metrics.get("psnr", {}).get("db"))),
        ("ssim drop", lambda c: _drop(c.image_metrics.get("ssim", {}).get("mean"))),
    ]
    return _filled(table, columns, measured)


def _filled(table: Table, columns: list, rows) -> Table:
    for header, _ in columns:
        # A long candidate id (backend/variant+techniques) wraps rather than being cut.
        table.add_column(header, no_wrap=header != "candidate", overflow="fold")
    for c in rows:
        table.add_row(*[get(c) for _, get in columns])
    return table


def _side_by_side(paired: dict) -> str:
    names = {"unet": "UNet", "e2e": "e2e"}
    parts = [f"{p['speedup']:.2f}x {names.get(level, level)}" if level != BASE_LEVEL
             else f"-{p['saved_s']:.2f} s/image vs base" for level, p in paired.items()]
    return ", ".join(parts) or "-"


def reason_lines(result: OptimizationResult) -> list[str]:
    """'candidate: reason' for every candidate that has one (printed under the table)."""
    return [f"{c.id}: {c.reason}" for c in result.candidates if c.reason]


def allowed(result: OptimizationResult) -> str:
    """The threshold as the tables state it: on which prompts it held."""
    if result.metric_drop_ths is None:
        return "lossless"
    where = ("on every prompt" if result.metric_aggregate == "max"
             else "on the mean over prompts")
    return f"<= {result.metric_drop_ths:g} {where}"


def _mean_worst(value: dict | None) -> str:
    if not value or value.get("mean") is None:
        return "-"
    return f"{_drop(value['mean'])} / {_drop(value.get('max'))}"


def _db(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}"


def make_console(**kwargs) -> Console:
    """A console that is wide enough for the tables even when stdout is a CI log, not a tty."""
    console = Console(**kwargs)
    if not console.is_terminal and "width" not in kwargs:
        console = Console(width=200, **kwargs)
    return console


def print_summary(result: OptimizationResult, console: Console | None = None) -> None:
    from rich.markup import escape

    console = console or make_console()
    console.print(candidates_table(result))
    e2e = end_to_end_table(result)
    if e2e is not None:
        console.print(e2e)
    lines = reason_lines(result)
    if lines:
        console.print("reasons:")
    for line in lines:
        # Reasons quote package specs like 'sdopt[gpu]', which rich would read as markup.
        console.print(f"  {escape(line)}", overflow="fold")
    console.print(summary_table(result))
    for note in getattr(result, "notes", []):
        console.print(f"note: {note}")


def _memory_column(candidates) -> tuple:
    """("peak mem", cell): the kind in the header when every candidate has the same one (on
    CUDA the device memory each adds, TensorRT's and ONNX Runtime's too), else in each cell."""
    from .timing import MEMORY_LABELS

    kinds = {c.memory_kind for c in candidates if c.peak_memory_bytes is not None}
    labels = {k: MEMORY_LABELS.get(k) for k in kinds}
    if len(kinds) <= 1:
        label = next(iter(labels.values()), None)
        return (f"peak mem ({label})" if label else "peak mem",
                lambda c: _mb(c.peak_memory_bytes))

    def cell(c) -> str:
        label = labels.get(c.memory_kind)
        text = _mb(c.peak_memory_bytes)
        return f"{text} ({label})" if label and c.peak_memory_bytes is not None else text

    return "peak mem", cell
