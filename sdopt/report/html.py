"""The self-contained HTML report.

plotly.js is inlined from the plotly Python package (``plotly.offline.get_plotlyjs``) and images
are data URIs, so the single file opens offline, from a CI artifact, years later. A Content
Security Policy forbids every network fetch: a report that tried one would show errors rather
than silently depending on the network.
"""

from __future__ import annotations

import os

from markupsafe import Markup
from plotly.offline import get_plotlyjs

from .templating import make_environment, user_template_errors

TEMPLATE = "report.html.j2"


def plotly_js() -> Markup:
    """plotly.min.js as markup for a <script> element."""
    js = get_plotlyjs()
    # "</script" inside would end the element early; "<\/script" means the same in JavaScript.
    return Markup(js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT"))


def render(context: dict, *, templates_dir: str | os.PathLike | None = None) -> str:
    env = make_environment(autoescape=True, templates_dir=templates_dir)
    with user_template_errors(templates_dir):
        return env.get_template(TEMPLATE).render(**context, plotly_js=plotly_js())
