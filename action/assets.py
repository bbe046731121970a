"""Host the PR comment's sample images on an orphan branch of the repository itself.

A comment can only show images by URL, and the only storage every workflow already has write
access to is its own repository: the images go to a branch that shares no history with the code
(default ``sdopt-assets``), one folder per run, written through the git data API (blobs, a tree,
a commit, the ref) with the job's token, so no checkout, no git binary and no credentials on
disk are needed. The comment links each file at the commit that added it
(``https://github.com/OWNER/REPO/raw/COMMIT/FOLDER/FILE``): that URL renders for everyone who
can see the repository, and never changes under an old comment.

The branch keeps the newest ``keep_runs`` folders, none older than ``keep_days`` when set
(folder names start with the UTC time, so they sort by age): each run's tree deletes the rest.
Two jobs updating the branch at once is normal (a matrix, two PRs): the ref is only ever
fast-forwarded, so the loser of a race gets GitHub's 422 "Update is not a fast forward" (or 422
"Reference already exists" when both create the branch, 409 while GitHub is busy) and starts
again from the new head, a few times.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sdopt.deps import require
from sdopt.errors import SdoptError
from sdopt.report.thumbnails import Thumbnail

DEFAULT_BRANCH = "sdopt-assets"
DEFAULT_KEEP_RUNS = 20
MAX_KEEP_RUNS = 1000
MAX_KEEP_DAYS = 3650
ATTEMPTS = 4
# A run's folder: "<UTC time>-<run id>-<attempt>[-<key>]", all made here from validated parts.
FOLDER = re.compile(r"^\d{8}T\d{6}Z-\d+-\d+(?:-[A-Za-z0-9._-]{1,64})?$")
_FILE = re.compile(r"^\d{2}-[a-z]+\.(?:webp|png)$")
# A branch name git and URLs both take as is (git check-ref-format, narrowed).
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class PublishError(Exception):
    """Why the images were not published, in one line for the comment."""


def check_branch(name: str, *, what: str = "input 'assets_branch'") -> str:
    if (len(name) > 100 or not _BRANCH.match(name) or ".." in name or name.endswith(".lock")
            or name.endswith(".")):
        raise SdoptError(f"{what} is '{name}': expected a branch name of letters, digits, "
                         "'.', '_', '-' and '/' (no '..', at most 100 characters)")
    return name


def run_folder(run_id: str | None, attempt: str | None, key: str = "default",
               now: datetime | None = None) -> str:
    """This run's folder name; the UTC time first so that names sort oldest first."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    rid = run_id if run_id and run_id.isdigit() else "0"
    att = attempt if attempt and attempt.isdigit() else "1"
    # comment_key separates a matrix's legs; its first 64 characters are enough for that.
    folder = f"{stamp}-{rid}-{att}" + ("" if key == "default" else f"-{key[:64]}")
    if not FOLDER.match(folder):
        raise SdoptError(f"comment_key '{key}' cannot name an assets folder")
    return folder


@dataclass
class Published:
    branch: str
    folder: str
    commit: str
    base_url: str                  # where the folder's files are, for the comment's links
    pruned: list[str] = field(default_factory=list)
    attempts: int = 1


def _client(token: str, api_url: str):
    github = require("github", "publishing the comment's images")
    return github.Github(auth=github.Auth.Token(token), base_url=api_url.rstrip("/"), retry=None,
                         timeout=30, per_page=100, lazy=True, seconds_between_requests=None,
                         seconds_between_writes=None)


def _runs(call, repo: str, head: str | None) -> tuple[str | None, list[str]]:
    """The head commit's tree and the run folders in it (names we did not make are kept and
    never counted, so nothing else on the branch is pruned)."""
    if head is None:
        return None, []
    commit = call("GET", f"/repos/{repo}/git/commits/{head}")
    tree_sha = commit["tree"]["sha"]
    tree = call("GET", f"/repos/{repo}/git/trees/{tree_sha}")
    return tree_sha, sorted(e["path"] for e in tree.get("tree", [])
                            if e.get("type") == "tree" and FOLDER.match(str(e.get("path"))))


def _older_than(folder: str, days: int, now: datetime) -> bool:
    stamp = datetime.strptime(folder[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return days > 0 and now - stamp > timedelta(days=days)


def publish_images(files: Iterable[Thumbnail], *, token: str, repository: str, folder: str,
                   branch: str = DEFAULT_BRANCH, keep_runs: int = DEFAULT_KEEP_RUNS,
                   keep_days: int = 0, now: datetime | None = None,
                   api_url: str = "https://api.github.com",
                   server_url: str = "https://github.com", sleep=time.sleep) -> Published:
    """Add ``files`` as ``folder`` on ``branch`` (created as an orphan when missing) and prune
    the oldest folders beyond ``keep_runs``, and those older than ``keep_days`` (0: no age
    limit); PublishError says why not, in one line."""
    from github import GithubException

    files = list(files)
    for f in files:                     # names are ours; checked again so no path can escape
        if not _FILE.match(f.name):
            raise PublishError(f"refused to publish '{f.name}': not a thumbnail name sdopt makes")
    if not FOLDER.match(folder):
        raise PublishError(f"refused to publish into '{folder}': not a run folder sdopt makes")
    check_branch(branch)
    if not 1 <= keep_runs <= MAX_KEEP_RUNS:
        raise SdoptError(f"input 'assets_keep_runs' is {keep_runs}: expected 1 to {MAX_KEEP_RUNS}")
    gh = _client(token, api_url)

    def call(verb: str, url: str, body: dict | None = None) -> dict:
        _, data = gh.requester.requestJsonAndCheck(verb, url, input=body)
        return data

    ref_url = f"/repos/{repository}/git/refs/heads/{branch}"
    try:
        blobs = {f.name: call("POST", f"/repos/{repository}/git/blobs",
                              {"content": base64.b64encode(f.data).decode(),
                               "encoding": "base64"})["sha"] for f in files}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                head = call("GET", f"/repos/{repository}/git/ref/heads/{branch}")["object"]["sha"]
            except GithubException as exc:
                if exc.status != 404:
                    raise
                head = None
            try:
                base_tree, runs = _runs(call, repository, head)
                others = [r for r in runs if r != folder]
                pruned = others[:max(0, len(others) - (keep_runs - 1))]
                pruned += [r for r in others if r not in pruned
                           and _older_than(r, keep_days, now or datetime.now(timezone.utc))]
                entries = [{"path": f"{folder}/{name}", "mode": "100644", "type": "blob",
                            "sha": sha} for name, sha in blobs.items()]
                entries += [{"path": r, "mode": "040000", "type": "tree", "sha": None}
                            for r in pruned]
                tree = call("POST", f"/repos/{repository}/git/trees",
                            {"tree": entries, **({"base_tree": base_tree} if base_tree else {})})
                commit = call("POST", f"/repos/{repository}/git/commits", {
                    "message": f"sdopt: comment images of run {folder}"
                               + (f", pruned {len(pruned)} older" if pruned else ""),
                    "tree": tree["sha"], "parents": [head] if head else []})
                if head:
                    call("PATCH", ref_url, {"sha": commit["sha"], "force": False})
                else:
                    call("POST", f"/repos/{repository}/git/refs",
                         {"ref": f"refs/heads/{branch}", "sha": commit["sha"]})
            except GithubException as exc:
                # 422: another job moved or created the branch first (not a fast forward,
                # reference already exists, or a pruned folder already gone); 409: GitHub is
                # busy with the repository. Both: read the new head and do it again.
                if exc.status in (409, 422) and attempt < ATTEMPTS:
                    sleep(0.5 * attempt)
                    continue
                raise
            return Published(branch, folder, commit["sha"],
                             f"{server_url.rstrip('/')}/{repository}/raw/{commit['sha']}/{folder}",
                             pruned, attempt)
        raise AssertionError("unreachable")
    except GithubException as exc:
        message = exc.data.get("message") if isinstance(exc.data, dict) else None
        hint = ""
        if exc.status in (403, 404):
            hint = " (the token needs 'contents: write'; a fork's pull request never has it)"
        raise PublishError(f"GitHub API answered {exc.status} on branch '{branch}': "
                           f"{message or 'no message'}{hint}") from None
    finally:
        gh.close()
