"""The markdown report for PR comments and the job summary.

Everything a template prints is escaped unless a filter marked it as already safe (jinja's
``finalize`` hook), the markdown equivalent of HTML autoescaping: a prompt containing ``|``
cannot break the table, ``<script>`` or ``<img>`` cannot become HTML, backticks cannot open a
code span, ``@name`` cannot ping anyone and ``#1``, ``owner/repo#5``, ``GH-3``, commit SHAs or
``www.`` links cannot become links (the prompts come from the pull request's author). GitHub refuses comments over 65,536 characters, so
the report is rendered again with fewer details until it fits, always keeping the marker, the
verdict and the summary table.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from .templating import make_environment, user_template_errors

TEMPLATE = "report.md.j2"
MARKER = "<!-- sdopt-report -->"
MAX_CHARS = 65_536
MAX_TEXT = 300  # characters of one user string (prompt, reason) in a comment

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
# GitHub turns these into links in a comment, anywhere in a line ("Autolinked references and
# URLs" in GitHub's docs): #26, owner/repo#26, GH-26, a commit SHA (7 to 40 hex digits, also
# after user@ or owner/repo@) and www. links. A backslash does not stop them (they are found in
# the rendered text), so a zero-width space is put inside each: the text reads the same, the
# reference no longer matches.
_ZWSP = "\u200b"
_ISSUE = re.compile(r"#(?=\d)")
_GH = re.compile(r"\b(GH)-(?=\d)", re.IGNORECASE)
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{7,}(?![0-9A-Za-z])")
_WWW = re.compile(r"\b(www)\.", re.IGNORECASE)


def _break_references(text: str) -> str:
    """``text`` with GitHub's autolinked references made inert (see above)."""
    text = _ISSUE.sub("#" + _ZWSP, text)
    text = _GH.sub(lambda m: m[1] + _ZWSP + "-", text)
    # Every 6 hex digits, so that no piece is a (short) SHA itself.
    text = _HEX_RUN.sub(lambda m: _ZWSP.join(m[0][i:i + 6] for i in range(0, len(m[0]), 6)),
                        text)
    return _WWW.sub(lambda m: m[1] + _ZWSP + ".", text)


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
    return Safe(_break_references(text))


def _finalize(value):
    if value is None:
        return ""
    if isinstance(value, Safe):
        return value
    return escape(value)


def safe_url(base: str, path: str = "") -> Safe:
    """A link target: our configured base URL plus a relative path, with characters that could
    end the markdown link percent-encoded."""
    url = str(base).rstrip("/") + ("/" + quote(str(path).lstrip("/")) if path else "")
    return Safe(quote(url, safe=":/?#=&%~.@+,;!$*'-_"))


def environment(templates_dir: str | os.PathLike | None = None):
    env = make_environment(autoescape=False, finalize=_finalize, templates_dir=templates_dir)
    env.filters["md"] = escape
    env.filters["safe_md"] = lambda v: Safe(str(v))
    env.filters["url"] = safe_url
    return env


def truncation_note(limit: int = MAX_CHARS, link: str | None = None) -> str:
    where = f"[the full report]({safe_url(link)})" if link else \
        "the full report is in the HTML artifact"
    return (f"\n\n> [!NOTE]\n> This comment was shortened to fit GitHub's {limit:,}-character "
            f"limit; {where}.\n")


def cap(text: str, limit: int = MAX_CHARS, *, link: str | None = None, note: str | None = None,
        encoding: str | None = None) -> str:
    """``text`` if it fits ``limit``, else its beginning cut at a line end, then ``note`` (by
    default one saying so and linking ``link``, the full report, when given). ``limit`` counts
    characters (GitHub's comment limit), or bytes in ``encoding`` (the job summary's).

    The beginning is what matters (the marker, the verdict, the summary table); a line end is
    preferred so that no table row or escape is left half, unless that would drop more than half
    of what fits (one enormous line)."""
    def size(s: str) -> int:
        return len(s.encode(encoding)) if encoding else len(s)

    if size(text) <= limit:
        return text
    note = truncation_note(limit, link) if note is None else note
    room = max(0, limit - size(note))
    # Bytes are cut where a character ends, never inside one.
    head = text.encode(encoding)[:room].decode(encoding, errors="ignore") if encoding \
        else text[:room]
    cut = head.rfind("\n")
    return (head[:cut] if cut > len(head) // 2 else head) + note


def render(context: dict, *, limit: int = MAX_CHARS,
           templates_dir: str | os.PathLike | None = None) -> str:
    """The markdown of ``context`` at the most detailed level that fits ``limit``, cut by
    :func:`cap` when even the shortest does not (an enormous field)."""
    with user_template_errors(templates_dir):
        template = environment(templates_dir).get_template(TEMPLATE)
        text = ""
        for i, level in enumerate(LEVELS):
            text = template.render(**context, limits=level, shortened=i > 0).strip() + "\n"
            if len(text) <= limit:
                return text
    return cap(text, limit, link=context.get("artifact_url") or None)
