"""Create or update the one sdopt comment on a pull request (GitHub REST API via PyGithub).

Upsert rules, so that reruns never pile up comments and we never touch anyone else's:
- our comment starts with a hidden marker ``<!-- sdopt-report:KEY -->`` (KEY separates several
  configs or matrix legs posting on one PR);
- only a comment with the marker AND written by the identity of our token is edited; the
  marker alone proves nothing (anyone can paste it). That identity comes from the token itself:
  ``GET /user`` for a personal token; for an installation token (GITHUB_TOKEN, or a GitHub
  App's from actions/create-github-app-token), which ``GET /user`` refuses and ``GET /app``
  refuses too (it needs the app's JWT), the GraphQL ``viewer`` login, which is the app's bot
  (``github-actions[bot]``, ``my-app[bot]``);
- every page of comments is searched (Link-header pagination), a long PR has hundreds;
- the body is capped at GitHub's 65,536 characters (a longer one is refused with 422) by the
  report's own cap (sdopt.report.markdown), the marker kept first.
- the ``comment`` input's policy decides whether to write at all (``decide``): ``always``,
  ``on-change`` (only when the verdict differs from the one the existing comment shows),
  ``on-regression`` (only for a regression or "not comparable", and to turn an existing
  comment back to pass); the verdict shown is kept in a second hidden marker
  ``<!-- sdopt-verdict:STATE -->``.
A token that may not comment (a fork PR's read-only token, missing ``pull-requests: write``)
yields a warning and the report stays in the job summary: the gate's verdict is what fails a job,
never the comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sdopt.deps import require
from sdopt.gate.results import NOT_COMPARABLE, REGRESSION
from sdopt.report.markdown import MAX_CHARS, cap

DEFAULT_API_URL = "https://api.github.com"
# The author of comments made with the workflow's GITHUB_TOKEN (the GraphQL viewer of that
# installation token); assumed only where the API cannot tell (GraphQL unreachable).
ACTIONS_BOT = "github-actions[bot]"
VIEWER_QUERY = "query { viewer { login } }"


def marker(key: str = "default") -> str:
    return f"<!-- sdopt-report:{key} -->"


def verdict_marker(state: str) -> str:
    return f"<!-- sdopt-verdict:{state} -->"


def shown_verdict(body: str) -> str | None:
    """The verdict an existing comment of ours shows (None: an older comment without it)."""
    head = "<!-- sdopt-verdict:"
    start = body.find(head)
    if start < 0:
        return None
    end = body.find(" -->", start)
    return body[start + len(head):end] if end > 0 else None


BAD_VERDICTS = (REGRESSION, NOT_COMPARABLE)


def decide(policy: str, state: str, existing: str | None, has_comment: bool) -> str | None:
    """Why the comment is left alone under ``policy`` (None: write it). ``state`` is this run's
    verdict (pass, regression, not_comparable, none), ``existing`` the one our comment shows."""
    if policy == "never":
        return "comment: never"
    if policy == "on-change" and has_comment and existing == state:
        return f"the verdict is still {state} (comment: on-change)"
    if policy == "on-regression" and state not in BAD_VERDICTS:
        if not has_comment:
            return f"the verdict is {state} (comment: on-regression)"
        if existing == state:
            return f"the verdict is still {state} (comment: on-regression)"
    return None


def cap_body(body: str, *, key: str = "default", artifact_url: str | None = None,
             limit: int = MAX_CHARS) -> str:
    """The marker first (it finds the comment again), then the body, cut with a note when the
    whole exceeds ``limit``."""
    mark = marker(key)
    return cap(body if body.startswith(mark) else f"{mark}\n{body}", limit, link=artifact_url)


@dataclass
class CommentResult:
    action: str                  # "created" | "updated" | "kept" (policy) | "skipped" (refused)
    url: str | None = None
    reason: str = ""


def github_client(token: str, api_url: str):
    github = require("github", "commenting on pull requests")
    Auth, Github = github.Auth, github.Github
    # Retries only delay a failure that our caller turns into a warning anyway; a run makes a
    # handful of requests, so PyGithub's client-side throttling buys nothing either.
    return Github(auth=Auth.Token(token), base_url=api_url.rstrip("/"), retry=None, timeout=30,
                  per_page=100, lazy=True, seconds_between_requests=None,
                  seconds_between_writes=None)


def _our_login(gh, configured: str | None) -> str:
    """Whose comments we may edit: ``configured``, else the token's own identity."""
    from github import GithubException

    if configured:
        return configured
    try:
        return gh.get_user().login
    except GithubException as exc:
        if exc.status not in (401, 403, 404):
            raise
    # An installation token (GITHUB_TOKEN or a GitHub App's): its GraphQL viewer is its bot.
    try:
        _, data = gh.requester.graphql_query(VIEWER_QUERY, {})
    except GithubException as exc:
        if exc.status in (401, 403, 404):
            return ACTIONS_BOT
        raise
    login = (((data or {}).get("data") or {}).get("viewer") or {}).get("login")
    return login if isinstance(login, str) and login else ACTIONS_BOT


def upsert_comment(*, token: str, repository: str, number: int, body: str | Callable[[], str],
                   key: str = "default",
                   api_url: str = DEFAULT_API_URL, author: str | None = None,
                   expected_head_sha: str | None = None,
                   artifact_url: str | None = None, policy: str = "always",
                   verdict: str = "none") -> CommentResult:
    """Create or update our comment as ``policy`` says (``decide``); GitHub API refusals come
    back as ``skipped`` with why, a comment the policy leaves alone as ``kept``. ``body`` may be
    a function making it: called only once the comment is known to be written (the action
    publishes the comment's images there, so a comment left alone adds nothing to the assets
    branch)."""
    from github import GithubException

    gh = github_client(token, api_url)
    mark = marker(key)
    try:
        repo = gh.get_repo(repository)
        if expected_head_sha:
            head = repo.get_pull(number).head.sha
            if head != expected_head_sha:
                return CommentResult("skipped", reason=(
                    f"pull request #{number}'s head is {head}, not {expected_head_sha}: the "
                    "results are for another commit (newer pushes comment for themselves)"))
        login = _our_login(gh, author)
        issue = repo.get_issue(number)
        ours = None
        for existing in issue.get_comments():
            user = existing.user.login if existing.user else None
            if user == login and (existing.body or "").lstrip().startswith(mark):
                ours = existing
                break
        why = decide(policy, verdict, shown_verdict(ours.body or "") if ours else None,
                     ours is not None)
        if why:
            return CommentResult("kept", ours.html_url if ours else None, reason=why)
        if callable(body):
            body = body()
        if body.startswith(mark):
            body = body[len(mark):].lstrip("\n")
        text = cap_body(f"{mark}\n{verdict_marker(verdict)}\n{body}", key=key,
                        artifact_url=artifact_url)
        if ours is not None:
            ours.edit(text)
            return CommentResult("updated", ours.html_url)
        created = issue.create_comment(text)
        return CommentResult("created", created.html_url)
    except GithubException as exc:
        message = exc.data.get("message") if isinstance(exc.data, dict) else None
        hint = ""
        if exc.status in (403, 404):
            hint = (" (a pull request from a fork gets a read-only token: use the workflow_run "
                    "commenter; otherwise grant 'pull-requests: write')")
        elif exc.status == 401:
            hint = " (the token is invalid or expired)"
        return CommentResult("skipped", reason=f"GitHub API answered {exc.status}: "
                                               f"{message or exc}{hint}")
    finally:
        gh.close()
