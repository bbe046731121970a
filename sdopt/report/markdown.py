"""The markdown report for PR comments and the job summary.

Everything a template prints is escaped unless a filter marked it as already safe (jinja's
``finalize`` hook), the markdown equivalent of HTML autoescaping: a prompt containing ``|``
cannot break the table, ``<script>`` or ``<img>`` cannot become HTML, backticks cannot open a
code span and ``@name`` cannot ping anyone. GitHub refuses comments over 65,536 characters, so
the report is rendered again with fewer details until it fits, always keeping the marker, the
verdict and the summary table.
"""

from __future__ import annotations

import re

MARKER = "<!-- sdopt-report -->"
MAX_CHARS = 65_536
MAX_TEXT = 300  # characters of one user string (prompt, reason) in a comment
TRUNCATION_NOTE = ("\n\n> [!NOTE]\n> This comment was shortened to fit GitHub's 65,536-character "
                   "limit; the full report is in the HTML artifact.\n")

# Each level renders fewer details; the last one keeps only marker, verdict, table and link.
LEVELS = (
    dict(candidates=None, regressions=None, reasons=None, images=None, environment=True),
    dict(candidates=60, regressions=50, reasons=30, images=30, environment=True),
    dict(candidates=15, regressions=20, reasons=10, images=10, environment=False),
    dict(candidates=0, regressions=5, reasons=5, images=0, environment=False),
)


class Safe(str):
    """Text a filter produced from our own formatting: printed as is."""


# Characters with a meaning anywhere in a line ($ opens GitHub math); the others that matter
# (#, -, +, =, "1.") only do at the start of a line and are handled there.
_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
_LINE_START = re.compile(r"^(?:([#+=-])|(\d+)([.)])(?=\s|$))")


def escape(value, limit: int = MAX_TEXT) -> Safe:
    """One line of inert markdown text that shows ``value`` literally."""
    if isinstance(value, Safe):
        return value
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text)
    text = _LINE_START.sub(lambda m: "\\" + m[1] if m[1] else m[2] + "\\" + m[3], text)
    # A zero-width space after @ stops GitHub from turning @name into a mention (and a
    # notification); after ':' it stops :emoji: shortcodes and bare-URL autolinks.
    text = text.replace("@", "@\u200b").replace("://", ":\u200b//")
    return Safe(text)


def _finalize(value):
    if value is None:
        return ""
    if isinstance(value, Safe):
        return value
    return escape(value)


def environment():
    from .templating import make_environment

    env = make_environment(autoescape=False, finalize=_finalize)
    env.filters["md"] = escape
    env.filters["safe_md"] = lambda v: Safe(str(v))
    env.filters["url"] = safe_url
    return env


def safe_url(base: str, path: str = "") -> Safe:
    """A link target: our configured base URL plus a relative path, with characters that could
    end the markdown link percent-encoded."""
    from urllib.parse import quote

    url = str(base).rstrip("/") + ("/" + quote(str(path).lstrip("/")) if path else "")
    return Safe(quote(url, safe=":/?#=&%~.@+,;!$*'-_"))


def render(context: dict) -> str:
    """The markdown of ``context``, at the most detailed level that fits MAX_CHARS."""
    template = environment().get_template("report.md.j2")
    text = ""
    for i, level in enumerate(LEVELS):
        text = template.render(**context, limits=level, shortened=i > 0).strip() + "\n"
        if len(text) <= MAX_CHARS:
            return text
    # Still too long (e.g. an enormous baseline source string): cut at a line end, then note.
    room = MAX_CHARS - len(TRUNCATION_NOTE)
    cut = text.rfind("\n", 0, room)
    return text[: cut if cut > 0 else room] + TRUNCATION_NOTE
