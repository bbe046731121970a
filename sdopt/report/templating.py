"""The jinja2 environment both reports share: templates shipped inside the sdopt package."""

from __future__ import annotations

from ..errors import MissingDependencyError
from . import fmt


def make_environment(*, autoescape: bool, finalize=None):
    try:
        import jinja2
    except ImportError:
        raise MissingDependencyError("jinja2", "report", "Rendering reports") from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sdopt", "templates"), autoescape=autoescape,
        finalize=finalize, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    for name in ("seconds", "size", "ratio", "number", "rate", "db", "timestamp", "p_value"):
        env.filters[name] = getattr(fmt, name)
    return env
