"""Which pull request a run concerns, from the event payload (and, for forks, from an artifact).

A ``pull_request`` run from a fork gets a read-only token, so it cannot comment; the safe pattern
is that it saves its context in the results artifact and a ``workflow_run`` job in the base
repository comments. ``workflow_run.pull_requests`` is empty for fork PRs, so the PR number comes
from that saved context, which the fork controls: it is only trusted when its head SHA is the
SHA of the run that triggered the commenter.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from sdopt.errors import SdoptError

CONTEXT_FILE = "github-context.json"


@dataclass
class PullRequestContext:
    repository: str                 # owner/name of the base repository (where comments go)
    number: int | None              # None: not a pull request (push, schedule...)
    head_sha: str | None
    head_repository: str | None
    event_name: str
    base_sha: str | None = None     # the PR's base commit: same-job mode measures it beside head

    @property
    def is_fork(self) -> bool:
        return bool(self.head_repository) and self.head_repository != self.repository

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _commit_sha(value) -> str | None:
    """A full commit id, or None: the payload is read from a file and passed on to git."""
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value) \
        else None


def load_payload(env: Mapping[str, str]) -> dict[str, Any]:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"GITHUB_EVENT_PATH '{path}' cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SdoptError(f"GITHUB_EVENT_PATH '{path}': expected a JSON object")
    return data


def _full_name(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("full_name"), str):
        return obj["full_name"]
    return None


def from_event(env: Mapping[str, str] | None = None) -> PullRequestContext:
    env = os.environ if env is None else env
    payload = load_payload(env)
    event_name = env.get("GITHUB_EVENT_NAME", "")
    repository = env.get("GITHUB_REPOSITORY") or _full_name(payload.get("repository")) or ""
    pr = payload.get("pull_request")
    if isinstance(pr, dict) and isinstance(pr.get("number"), int):
        head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
        base = pr.get("base") if isinstance(pr.get("base"), dict) else {}
        return PullRequestContext(
            repository=_full_name(base.get("repo")) or repository, number=pr["number"],
            head_sha=head.get("sha") if isinstance(head.get("sha"), str) else None,
            head_repository=_full_name(head.get("repo")), event_name=event_name,
            base_sha=_commit_sha(base.get("sha")))
    issue = payload.get("issue")
    if isinstance(issue, dict) and isinstance(issue.get("number"), int) and "pull_request" in issue:
        return PullRequestContext(repository, issue["number"], None, None, event_name)
    return PullRequestContext(repository, None, env.get("GITHUB_SHA"), None, event_name)


def save_context(ctx: PullRequestContext, directory: str | os.PathLike) -> Path:
    from sdopt.store import write_json

    path = Path(directory) / CONTEXT_FILE
    write_json(path, ctx.to_dict())
    return path


def context_for_comment(artifact_dir: str | os.PathLike,
                        env: Mapping[str, str] | None = None) -> PullRequestContext:
    """The PR a ``workflow_run`` commenter may comment on, checked against the triggering run."""
    env = os.environ if env is None else env
    path = Path(artifact_dir) / CONTEXT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdoptError(f"'{path}' is missing: artifact_dir must be the downloaded artifact of a "
                         "run of this action in mode gate") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"'{path}' is not valid JSON: {exc}") from None
    number = data.get("number") if isinstance(data, dict) else None
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)
                               or number <= 0):
        raise SdoptError(f"'{path}': field 'number' must be a positive integer or null")
    head_sha = data.get("head_sha")
    payload = load_payload(env)
    run = payload.get("workflow_run")
    repository = env.get("GITHUB_REPOSITORY") or _full_name(payload.get("repository")) or ""
    if isinstance(run, dict):
        if not isinstance(head_sha, str) or head_sha != run.get("head_sha"):
            raise SdoptError(f"'{path}': head_sha {head_sha!r} is not the triggering run's "
                             f"head_sha {run.get('head_sha')!r}: refusing to comment on a pull "
                             "request the artifact names")
        listed = [p.get("number") for p in run.get("pull_requests") or [] if isinstance(p, dict)]
        if listed and number not in listed:
            raise SdoptError(f"'{path}': pull request #{number} is not among the triggering run's "
                             f"pull requests {listed}")
    head_repo = data.get("head_repository") if isinstance(data.get("head_repository"), str) else None
    return PullRequestContext(repository, number, head_sha if isinstance(head_sha, str) else None,
                              head_repo, env.get("GITHUB_EVENT_NAME", "workflow_run"))


def history_refusal(env: Mapping[str, str]) -> str | None:
    """Why this run may not be added to the results history (None: it may). Only a push to the
    repository's default branch adds a run: a pull request's code (a fork's above all) must not
    write what later runs read as the project's past, and other branches are not its line."""
    event_name = env.get("GITHUB_EVENT_NAME", "")
    if event_name != "push":
        return (f"the event is {event_name or 'not known'}, and only pushes to the default "
                "branch add to the history")
    repository = load_payload(env).get("repository")
    default = repository.get("default_branch") if isinstance(repository, dict) else None
    ref = env.get("GITHUB_REF", "")
    if not isinstance(default, str) or not default:
        return "the push event names no default branch"
    if ref != f"refs/heads/{default}":
        return f"{ref or 'this ref'} is not the default branch ({default})"
    return None
