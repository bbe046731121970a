"""Options that mean the same on every command that has them, defined once: one name, one
meaning, one help text (``--out`` is always a directory, ``--overwrite`` always replaces what sdopt
wrote before, ``--baseline`` is always a baseline spec)."""

from __future__ import annotations

import click

from ..gate.config import THRESHOLD_SHORTCUTS, make_override, parse_override

CONFIG_HELP = "The sdopt.toml to read (or the directory holding it)."


class CommaList(click.ParamType):
    """A comma-separated subset of fixed words, e.g. ``original,optimized``."""

    name = "list"

    def __init__(self, choices: tuple[str, ...]):
        self.choices = tuple(choices)

    def get_metavar(self, param, ctx=None) -> str:
        return ",".join(self.choices)

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        bad = [v for v in items if v not in self.choices]
        if bad or not items:
            self.fail(f"'{value}': expected a comma-separated list of {', '.join(self.choices)}",
                      param, ctx)
        if len(set(items)) != len(items):
            self.fail(f"'{value}' names an item twice", param, ctx)
        return items


SHORTCUT_HELP = {
    "latency_tolerance": "Allowed slowdown before a latency regression, e.g. 0.1",
    "psnr_min_db": "Lowest PSNR (dB) of an image against the baseline's",
    "ssim_min": "Lowest SSIM of an image against the baseline's",
}


def set_option(fn):
    return click.option(
        "--set", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override a setting of sdopt.toml with a TOML value (repeatable), e.g. "
             "bench.runs=5 or 'gate.variant=\"original\"'.")(fn)


def threshold_options(fn):
    for name in reversed(THRESHOLD_SHORTCUTS):
        flag = "--" + name.replace("_", "-")
        fn = click.option(flag, type=float, default=None,
                          help=f"{SHORTCUT_HELP[name]} (shortcut for --set gate.{name}=X).")(fn)
    return fn


def allow_other_machine_option(fn):
    return click.option(
        "--allow-other-machine", is_flag=True,
        help="Compare results measured on another machine (a warning in the verdict) instead of "
             "calling them not comparable.")(fn)


def json_option(fn):
    return click.option("--json", is_flag=True,
                        help="Print the verdict document as JSON on stdout (everything else "
                             "goes to stderr).")(fn)


def collect_overrides(set_values, **thresholds) -> list:
    """The threshold shortcuts, then ``--set`` in order (a later value wins)."""
    out = [make_override(f"gate.{name}", value, source=f"--{name.replace('_', '-')} {value:g}")
           for name, value in thresholds.items() if value is not None]
    return out + [parse_override(text) for text in set_values]


def overwrite_option(fn):
    return click.option("--overwrite", is_flag=True,
                        help="Replace an existing --out directory.")(fn)


def quiet_option(fn):
    return click.option("--quiet", is_flag=True, help="No progress bars.")(fn)


def baseline_option(fn):
    return click.option("--baseline", default=None, metavar="BASELINE",
                        help="Baseline instead of the config's: a results directory, a "
                             "downloaded artifact directory or git:REF:PATH.")(fn)


def config_option(fn):
    return click.option("--config", default="sdopt.toml", show_default=True,
                        type=click.Path(dir_okay=True), help=CONFIG_HELP)(fn)


def out_option(help_text: str, **kwargs):
    """``--out DIR``: always a directory (what it holds differs by command)."""
    return click.option("--out", **{"default": None, "type": click.Path(file_okay=False),
                                    "help": help_text, **kwargs})


def same_job_base_option(fn):
    return click.option("--same-job-base", default=None, metavar="GIT_REF",
                        help="Also measure the model as committed at GIT_REF, interleaved in this "
                             "job, and write it to OUT/base as the baseline (for PRs that change "
                             "the model).")(fn)
