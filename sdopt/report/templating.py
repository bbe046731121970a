"""The jinja2 environment both reports share.

The built-in templates are the package ``sdopt.templates`` (the top-level templates/ folder,
shipped as package data), loaded through importlib by jinja's PackageLoader, so a wheel, a zip and
an editable install find them alike. A user's directory (``sdopt report --templates DIR``, config
``report.templates``) is searched first: a file there replaces the built-in one of the same name,
a whole page or a single partial, and everything else stays built in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jinja2

from ..errors import SdoptError
from . import fmt

BUILTIN_PACKAGE = "sdopt.templates"


def make_environment(*, autoescape: bool, finalize=None,
                     templates_dir: str | os.PathLike | None = None) -> jinja2.Environment:
    loader: jinja2.BaseLoader = jinja2.PackageLoader(BUILTIN_PACKAGE, "")
    if templates_dir is not None:
        path = Path(templates_dir)
        if not path.is_dir():
            raise SdoptError(f"templates directory '{path}' not found: expected a directory "
                             "with templates named like the built-in ones (report.md.j2, "
                             "report.html.j2, partials/*.j2)")
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(path), loader])
    env = jinja2.Environment(
        loader=loader, autoescape=autoescape, finalize=finalize,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    for name in ("seconds", "size", "ratio", "number", "rate", "db", "timestamp", "p_value"):
        env.filters[name] = getattr(fmt, name)
    return env


@contextlib.contextmanager
def user_template_errors(templates_dir: str | os.PathLike | None):
    """With a user directory, a template error is most likely the user's and becomes one line
    naming the template; without one, it is a bug of ours and keeps its traceback."""
    if templates_dir is None:
        yield
        return
    try:
        yield
    except jinja2.TemplateSyntaxError as exc:
        raise SdoptError(f"template '{exc.filename or exc.name}' line {exc.lineno}: "
                         f"{exc.message}") from None
    except jinja2.TemplateError as exc:
        raise SdoptError(f"a report template (--templates '{templates_dir}') failed: "
                         f"{type(exc).__name__}: {exc}") from None
