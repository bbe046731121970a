"""The self-contained HTML report.

plotly.js is inlined from the plotly Python package (``plotly.offline.get_plotlyjs``) and images
are data URIs, so the single file opens offline, from a CI artifact, years later. A Content
Security Policy forbids every network fetch: a report that tried one would show errors rather
than silently depending on the network.
"""

from __future__ import annotations

from ..errors import MissingDependencyError


def plotly_js():
    """plotly.min.js as markup for a <script> element."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingDependencyError("plotly", "report", "The HTML report") from None
    from markupsafe import Markup

    js = get_plotlyjs()
    # "</script" inside would end the element early; "<\/script" means the same in JavaScript.
    return Markup(js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT"))


def render(context: dict) -> str:
    from .templating import make_environment

    env = make_environment(autoescape=True)
    return env.get_template("report.html.j2").render(**context, plotly_js=plotly_js())
