"""A check run with the gate's verdict (the GitHub Checks API), besides the PR comment.

Bencher reports its verdict as a check run: it sits on the commit in the pull request's checks
tab and in the branch protection settings, where a comment cannot. ``create_check_run`` posts
one completed check run, ``POST /repos/{owner}/{repo}/check-runs``, on the commit the results
are for (a pull request's head, a push's commit):
- ``name`` ``sdopt`` (``sdopt (KEY)`` for a ``comment_key``, so matrix legs keep their own);
- ``conclusion`` from the verdict: ``success`` for a pass, ``failure`` for a regression or a
  "not comparable" that ``fail_on`` lists (``neutral`` when it does not), ``neutral`` without a
  verdict (mode optimize). Results from an artifact that a fork controls (mode comment) never
  conclude ``success``: a fork can write any verdict into its own artifact, and a green check
  in the base repository would look like the base repository's own judgement;
- ``output.title`` the verdict in one line, ``output.summary`` the verdict, its reasons and the
  report (the summary table), ``output.text`` where the results come from. The Checks API
  takes at most 65,535 characters in each of summary and text: both are cut at a line end with
  a note (counted in UTF-16 code units, which is never less than the characters GitHub counts).
  Text taken from results (reasons, prompts, config names) is escaped as markdown by sdopt's one
  escaper, so it shows literally and mentions nobody.

Only a GitHub App's token can create check runs, with ``checks: write``: GITHUB_TOKEN when the
workflow grants it, never a fork pull request's read-only token (403 "Resource not accessible by
integration"), nor a personal access token (403 "You must authenticate via a GitHub App.").
Where the check cannot be made the action says why in one line and the verdict stays in the
annotations and the job summary (``main.check_fallback``): a check run never fails the job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdopt.gate.results import NOT_COMPARABLE, PASS, REGRESSION
from sdopt.report.markdown import escape

from .comment import github_client

# The Checks API's limit on output.summary and output.text (docs.github.com/rest/checks/runs).
OUTPUT_LIMIT = 65_535
TITLE_LIMIT = 200               # a title is one line in the checks list: keep it short
NAME = "sdopt"
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_URL = re.compile(r"^https?://[^\s<>\"'`()]+$")
# The UTF-16 form counts every character at least once (astral ones twice): cutting in it keeps
# a text under the limit whatever GitHub counts (characters or UTF-16 units).
_ENCODING = "utf-16-le"


def check_name(key: str = "default") -> str:
    return NAME if key == "default" else f"{NAME} ({key})"


def conclusion(state: str, fail_on: tuple[str, ...], *, trusted: bool = True) -> str:
    """The check run's conclusion for the verdict ``state`` (pass, regression, not_comparable,
    none); ``trusted``: the results are this job's own run, not a downloaded artifact."""
    if state == PASS:
        return "success" if trusted else "neutral"
    if state in (REGRESSION, NOT_COMPARABLE):
        return "failure" if state in fail_on else "neutral"
    return "neutral"


def cut(text: str, limit: int = OUTPUT_LIMIT, link: str | None = None) -> str:
    """``text`` within ``limit`` characters (UTF-16 units), cut at a line end with a note."""
    from sdopt.report.markdown import cap, safe_url

    where = f"[the full report]({safe_url(link)})" if link and _URL.match(link) else \
        "the full report is in the results artifact (report.html)"
    note = (f"\n\n> [!NOTE]\n> Shortened to fit the Checks API's {limit:,}-character limit; "
            f"{where}.\n")
    return cap(text, 2 * limit, note=note, encoding=_ENCODING)


def title(state: str, speedup: float | None, reasons: list[str], *, trusted: bool = True) -> str:
    """One line: the verdict, the speedup, the first reason (a title is plain text, not
    markdown: only its whitespace is collapsed, and it is cut to TITLE_LIMIT)."""
    words = state if state in (PASS, REGRESSION) else \
        "not comparable with the baseline" if state == NOT_COMPARABLE else \
        "no verdict (no baseline compared)"
    line = f"sdopt: {words}"
    if speedup is not None:
        line += f", optimized {speedup:.2f}x the original's speed"
    if state != PASS and reasons:
        line += f"; {reasons[0]}"
    if not trusted:
        line += " (as the pull request's own run reported it)"
    line = " ".join(line.split())
    return line if len(line) <= TITLE_LIMIT else line[:TITLE_LIMIT - 1] + "…"


def summary(state: str, reasons: list[str], report: str, *, trusted: bool = True,
            artifact_url: str | None = None) -> str:
    """The verdict, its reasons (escaped) and the report markdown (already escaped by sdopt's
    renderer), cut to the Checks API's limit."""
    head = [f"**Verdict: {escape(state.replace('_', ' ').upper())}**", ""]
    head += [f"- {escape(reason)}" for reason in reasons]
    if not trusted:
        head += ["", "These results come from the pull request's own run (its artifact), which "
                     "the pull request's author controls: a pass is shown as neutral, never as "
                     "success."]
    return cut("\n".join(head).rstrip() + "\n\n" + report.strip() + "\n", link=artifact_url)


def details(*, config: str, key: str, run_url: str | None, artifact_url: str | None,
            head_sha: str) -> str:
    """output.text: where the results come from."""
    lines = [f"- config: {escape(config)}" if config else "- config: (none)",
             f"- commit: {head_sha if _SHA.match(head_sha or '') else escape(head_sha)}"]
    if key != "default":
        lines.append(f"- comment key: {escape(key)}")
    if run_url and _URL.match(run_url):
        lines.append(f"- workflow run: {run_url}")
    if artifact_url and _URL.match(artifact_url):
        lines.append(f"- results: [artifact]({artifact_url}) (HTML report, results.json, "
                     "verdict.json, images)")
    return cut("\n".join(lines) + "\n")


@dataclass
class CheckResult:
    created: bool
    url: str | None = None
    reason: str = ""            # why none was created (one line, no token in it)


def create_check_run(*, token: str, repository: str, head_sha: str, name: str,
                     conclusion: str, title: str, summary: str, text: str,
                     details_url: str | None = None,
                     api_url: str = "https://api.github.com") -> CheckResult:
    """One completed check run; a refusal by the API comes back as ``created=False`` with
    why (the status, GitHub's message, and what to change)."""
    from github import GithubException

    if not _SHA.match(head_sha or ""):
        return CheckResult(False, reason=f"'{head_sha}' is not a commit id")
    gh = github_client(token, api_url)
    try:
        repo = gh.get_repo(repository)
        kwargs = {}
        if details_url and _URL.match(details_url):
            kwargs["details_url"] = details_url
        run = repo.create_check_run(
            name=name, head_sha=head_sha, status="completed", conclusion=conclusion,
            output={"title": title, "summary": summary, "text": text}, **kwargs)
        return CheckResult(True, run.html_url)
    except GithubException as exc:
        message = exc.data.get("message") if isinstance(exc.data, dict) else None
        hint = ""
        if exc.status == 403 and message and "GitHub App" in message:
            hint = (" (only a GitHub App's token can create check runs: use GITHUB_TOKEN or an "
                    "app's installation token, not a personal access token)")
        elif exc.status in (403, 404):
            hint = (" (grant 'checks: write' in the workflow's permissions; a pull request from "
                    "a fork gets a read-only token: the workflow_run commenter creates its check)")
        elif exc.status == 401:
            hint = " (the token is invalid or expired)"
        text = " ".join(str(message or exc).split())[:300]
        return CheckResult(False, reason=f"GitHub API answered {exc.status}: {text}{hint}")
    except Exception as exc:  # noqa: BLE001 - no network, a proxy, a timeout: never fail the job
        return CheckResult(False, reason=f"the GitHub API could not be reached "
                                         f"({type(exc).__name__})")
    finally:
        gh.close()
