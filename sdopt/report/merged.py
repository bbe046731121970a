"""The markdown of a CI matrix's fan-in (``sdopt merge``): a table of the jobs under the merged
verdict, then each job's own report folded.

Rendered with the same template environment, escaping and length cap as a single job's report:
job names come from artifact directories and devices from results files, both controlled by
whoever ran the job. The jobs share GitHub's comment limit, so each job's report is rendered at
the level of detail that fits its share.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..gate.merge import Leg
from ..gate.results import VERDICT_TITLE
from . import markdown
from .context import build_context
from .templating import user_template_errors

TEMPLATE = "merged.md.j2"
# Below this share of the comment a job's report would be little more than its marker.
MIN_LEG_CHARS = 2_000
# "<details><summary>NAME</summary>" and the blank lines around a folded report.
DETAILS_OVERHEAD = 60


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def merged_markdown(legs: list[Leg], verdict: dict[str, Any] | None, *,
                    limit: int = markdown.MAX_CHARS,
                    templates_dir: str | os.PathLike | None = None,
                    leg_contexts: Mapping[str, dict] | None = None) -> str:
    """``leg_contexts``: per job name, what its report's context gains (the action's hosted
    sample images: ``md_images``, or ``image_base_url``)."""
    rows = [{"name": leg.name, "device": leg.device,
             "original": _seconds(leg.median("original")),
             "optimized": _seconds(leg.median("optimized")),
             "speedup": "n/a" if leg.speedup is None else f"{leg.speedup:.2f}x",
             "verdict": VERDICT_TITLE.get(leg.state, "n/a"), "body": None} for leg in legs]
    context = {"title": VERDICT_TITLE.get((verdict or {}).get("verdict"), ""), "legs": rows,
               "reasons": (verdict or {}).get("reasons") or [], "bodies_left_out": False}
    with user_template_errors(templates_dir):
        template = markdown.environment(templates_dir).get_template(TEMPLATE)
        head = template.render(**context)
        names = sum(len(markdown.escape(leg.name)) + DETAILS_OVERHEAD for leg in legs)
        share = (limit - len(head) - names) // max(1, len(legs))
        if share < MIN_LEG_CHARS:
            context["bodies_left_out"] = True
        else:
            for leg, row in zip(legs, rows):
                extra = dict((leg_contexts or {}).get(leg.name) or {})
                context_leg = build_context(leg.results, leg.directory, verdict=leg.verdict,
                                            html=False,
                                            image_base_url=extra.pop("image_base_url", None))
                context_leg.update(extra)
                body = markdown.render(context_leg, limit=share, templates_dir=templates_dir)
                row["body"] = markdown.Safe(body.strip())
        text = template.render(**context).strip() + "\n"
    return markdown.cap(text, limit)
