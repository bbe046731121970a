"""Host the PR comment's sample images on an orphan branch of the repository itself.

A comment can only show images by URL, and the only storage every workflow already has write
access to is its own repository: the images go to a branch that shares no history with the code
(default ``sdopt-assets``), one folder per run. The comment links each file at the commit that
added it (``https://github.com/OWNER/REPO/raw/COMMIT/FOLDER/FILE``): that URL renders for
everyone who can see the repository, and never changes under an old comment (the branch is only
ever fast-forwarded, so that commit stays on it).

Two transports write the same commit, and share everything but the writing (what files go
where, which folders are pruned, the commit message, the retries, the links):
- ``api`` (the default): the git data API (blobs, a tree, a commit, the ref) with the job's
  token; no checkout, no git binary, no credentials on disk;
- ``git``: the real ``git`` binary in a throwaway bare repository, through action/gitbranch.py
  (shared with the results history's branch): ``ls-remote``/``fetch --depth 1`` of the branch,
  ``hash-object``/``mktree``/``commit-tree``, a plain (never forced) ``push``, the token only in
  git's environment. ``auto`` picks it when the workspace is a checkout of this repository and
  git is installed.

The branch keeps the newest ``keep_runs`` folders, none older than ``keep_days`` when set
(folder names start with the UTC time, so they sort by age): each run's tree deletes the rest,
and nothing else on the branch. Two jobs updating the branch at once is normal (a matrix, two
PRs): the ref is only ever fast-forwarded, so the loser of a race is refused (the API's 422
"Update is not a fast forward" or "Reference already exists", 409 while GitHub is busy; git's
rejected non-fast-forward push) and builds its commit again on the new head (no rebase: the
tree is made again from the new head's), a few times.
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
from sdopt.gate.config import assets_branch_problem
from sdopt.report.thumbnails import Thumbnail

from .gitbranch import (ATTEMPTS, BOT_EMAIL, BOT_NAME, TOKEN_HINT, BranchError, Conflict,
                        GitBranch, git_env, git_remote, repository_remote, retry)

DEFAULT_BRANCH = "sdopt-assets"
DEFAULT_KEEP_RUNS = 20
MAX_KEEP_RUNS = 1000
MAX_KEEP_DAYS = 3650
TRANSPORTS = ("auto", "api", "git")
# A run's folder: "<UTC time>-<run id>-<attempt>[-<key>]", all made here from validated parts.
FOLDER = re.compile(r"^\d{8}T\d{6}Z-\d+-\d+(?:-[A-Za-z0-9._-]{1,64})?$")
# "<row>-<kind>.<ext>", a matrix leg's prefixed "j<leg>-" (sdopt.report.thumbnails).
_FILE = re.compile(r"^(?:j\d{2}-)?\d{2}-[a-z]+\.(?:webp|png)$")
# Why the images were not published, in one line for the comment; another job moved (or
# created) the branch first (both transports; action/gitbranch.py retries on it).
PublishError = BranchError
_Conflict = Conflict
__all__ = ["ATTEMPTS", "BOT_EMAIL", "BOT_NAME", "PublishError", "git_env", "git_remote",
           "publish_images", "run_folder"]


def check_branch(name: str, *, what: str = "input 'assets_branch'") -> str:
    problem = assets_branch_problem(name)
    if problem:
        raise SdoptError(f"{what} is '{name}': {problem}")
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
    transport: str = "api"


# --- what every transport shares: the checks, the plan, the retries, the links -------------

def _older_than(folder: str, days: int, now: datetime) -> bool:
    stamp = datetime.strptime(folder[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return days > 0 and now - stamp > timedelta(days=days)


def run_folders(names: Iterable[str]) -> list[str]:
    """The run folders among the names at the branch's top level, oldest first (names we did
    not make are kept and never counted, so nothing else on the branch is pruned)."""
    return sorted(n for n in names if FOLDER.match(str(n)))


def choose_pruned(runs: list[str], folder: str, keep_runs: int, keep_days: int,
                  now: datetime) -> list[str]:
    """The run folders this run's commit deletes: beyond the newest ``keep_runs`` (this run's
    counted), and those older than ``keep_days`` (0: no age limit)."""
    others = [r for r in run_folders(runs) if r != folder]
    pruned = others[:max(0, len(others) - (keep_runs - 1))]
    return pruned + [r for r in others if r not in pruned and _older_than(r, keep_days, now)]


def commit_message(folder: str, pruned: list[str]) -> str:
    return (f"sdopt: comment images of run {folder}"
            + (f", pruned {len(pruned)} older" if pruned else ""))


def _checked(files: Iterable[Thumbnail], folder: str, branch: str, keep_runs: int,
             keep_days: int) -> list[Thumbnail]:
    files = list(files)
    for f in files:                     # names are ours; checked again so no path can escape
        if not _FILE.match(f.name):
            raise PublishError(f"refused to publish '{f.name}': not a thumbnail name sdopt makes")
    if len({f.name for f in files}) != len(files):
        raise PublishError("refused to publish two files of the same name")
    if not FOLDER.match(folder):
        raise PublishError(f"refused to publish into '{folder}': not a run folder sdopt makes")
    check_branch(branch)
    if not 1 <= keep_runs <= MAX_KEEP_RUNS:
        raise SdoptError(f"input 'assets_keep_runs' is {keep_runs}: expected 1 to {MAX_KEEP_RUNS}")
    if not 0 <= keep_days <= MAX_KEEP_DAYS:
        raise SdoptError(f"input 'assets_keep_days' is {keep_days}: expected 0 to "
                         f"{MAX_KEEP_DAYS}")
    return files


def _publish(writer, files: list[Thumbnail], *, repository: str, folder: str, branch: str,
             keep_runs: int, keep_days: int, now: datetime | None, server_url: str,
             sleep) -> Published:
    """The one publishing loop: store the files, then read the head, plan, write; on a
    concurrent update read the new head and plan again, up to ATTEMPTS times."""
    try:
        writer.store(files)
    except _Conflict as exc:
        raise PublishError(str(exc)) from None

    def step() -> tuple[str, list[str]]:
        head, names = writer.read()
        pruned = choose_pruned(names, folder, keep_runs, keep_days,
                               now or datetime.now(timezone.utc))
        return writer.write(head, folder, pruned, commit_message(folder, pruned)), pruned

    (commit, pruned), attempt = retry(step, sleep=sleep)
    return Published(branch, folder, commit,
                     f"{server_url.rstrip('/')}/{repository}/raw/{commit}/{folder}",
                     pruned, attempt, writer.name)


def publish_images(files: Iterable[Thumbnail], *, token: str, repository: str, folder: str,
                   branch: str = DEFAULT_BRANCH, keep_runs: int = DEFAULT_KEEP_RUNS,
                   keep_days: int = 0, now: datetime | None = None,
                   api_url: str = "https://api.github.com",
                   server_url: str = "https://github.com", sleep=time.sleep,
                   transport: str = "api", remote: str | None = None) -> Published:
    """Add ``files`` as ``folder`` on ``branch`` (created as an orphan when missing) and prune
    the oldest folders beyond ``keep_runs``, and those older than ``keep_days`` (0: no age
    limit), through ``transport`` (api, or git pushing to ``remote``, by default the
    repository on ``server_url``); PublishError says why not, in one line."""
    files = _checked(files, folder, branch, keep_runs, keep_days)
    kw = dict(repository=repository, folder=folder, branch=branch, keep_runs=keep_runs,
              keep_days=keep_days, now=now, server_url=server_url, sleep=sleep)
    if transport == "git":
        with _GitWriter(remote or repository_remote(server_url, repository), branch, token,
                        server_url) as writer:
            return _publish(writer, files, **kw)
    if transport != "api":
        raise SdoptError(f"assets transport '{transport}': expected api or git")
    with _ApiWriter(token, api_url, repository, branch) as writer:
        return _publish(writer, files, **kw)


# --- transport: the GitHub git data API -----------------------------------------------------

def _client(token: str, api_url: str):
    github = require("github", "publishing the comment's images")
    return github.Github(auth=github.Auth.Token(token), base_url=api_url.rstrip("/"), retry=None,
                         timeout=30, per_page=100, lazy=True, seconds_between_requests=None,
                         seconds_between_writes=None)


class _ApiWriter:
    name = "api"

    def __init__(self, token: str, api_url: str, repository: str, branch: str):
        self.repo, self.branch = repository, branch
        self.gh = _client(token, api_url)
        self.blobs: dict[str, str] = {}
        self.root: list[dict] = []        # the head's top-level entries

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.gh.close()

    def _call(self, verb: str, url: str, body: dict | None = None, *,
              missing_ok: bool = False) -> dict | None:
        from github import GithubException

        try:
            _, data = self.gh.requester.requestJsonAndCheck(verb, url, input=body)
            return data
        except GithubException as exc:
            if missing_ok and exc.status == 404:
                return None
            message = exc.data.get("message") if isinstance(exc.data, dict) else None
            line = (f"GitHub API answered {exc.status} on branch '{self.branch}': "
                    f"{message or 'no message'}")
            # 422: another job moved or created the branch first (not a fast forward, reference
            # already exists); 409: GitHub is busy with the
            # repository. Both: read the new head and do it again.
            if exc.status in (409, 422):
                raise _Conflict(line) from None
            if exc.status in (403, 404):
                line += TOKEN_HINT
            raise PublishError(line) from None

    def store(self, files: list[Thumbnail]) -> None:
        self.blobs = {f.name: self._call("POST", f"/repos/{self.repo}/git/blobs",
                                         {"content": base64.b64encode(f.data).decode(),
                                          "encoding": "base64"})["sha"] for f in files}

    def read(self) -> tuple[str | None, list[str]]:
        ref = self._call("GET", f"/repos/{self.repo}/git/ref/heads/{self.branch}",
                         missing_ok=True)
        if ref is None:
            self.root = []
            return None, []
        head = ref["object"]["sha"]
        root = self._call("GET", f"/repos/{self.repo}/git/commits/{head}")["tree"]["sha"]
        tree = self._call("GET", f"/repos/{self.repo}/git/trees/{root}")
        if tree.get("truncated"):
            raise PublishError(f"branch '{self.branch}' has too many entries at its top level "
                               "for GitHub to list (truncated)")
        self.root = [{k: e.get(k) for k in ("path", "mode", "type", "sha")}
                     for e in tree.get("tree", [])]
        return head, [str(e["path"]) for e in self.root if e["type"] == "tree"]

    def write(self, head: str | None, folder: str, pruned: list[str], message: str) -> str:
        # The whole top level, as the git transport's mktree: the head's entries but the pruned
        # folders, then this run's files. No base_tree, so whatever is not listed is deleted
        # (GitHub's documented "sha": null deletes a file, not a folder).
        gone = set(pruned) | {folder}
        entries = [e for e in self.root if e["path"] not in gone]
        entries += [{"path": f"{folder}/{name}", "mode": "100644", "type": "blob", "sha": sha}
                    for name, sha in self.blobs.items()]
        tree = self._call("POST", f"/repos/{self.repo}/git/trees", {"tree": entries})
        commit = self._call("POST", f"/repos/{self.repo}/git/commits",
                            {"message": message, "tree": tree["sha"],
                             "parents": [head] if head else []})
        if head:
            self._call("PATCH", f"/repos/{self.repo}/git/refs/heads/{self.branch}",
                       {"sha": commit["sha"], "force": False})
        else:
            self._call("POST", f"/repos/{self.repo}/git/refs",
                       {"ref": f"refs/heads/{self.branch}", "sha": commit["sha"]})
        return commit["sha"]


# --- transport: git itself, in a throwaway bare repository (action/gitbranch.py) ----------------

class _GitWriter:
    name = "git"

    def __init__(self, remote: str, branch: str, token: str | None, server_url: str):
        self.repo = GitBranch(remote, branch, token, server_url, what="images")
        self.folder_tree: str | None = None
        self.entries: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.repo.close()

    def store(self, files: list[Thumbnail]) -> None:
        self.folder_tree = self.repo.mktree(f"100644 blob {self.repo.blob(f.data)}\t{f.name}"
                                            for f in files)

    def read(self) -> tuple[str | None, list[str]]:
        head = self.repo.fetch_head()
        self.entries = self.repo.ls_tree(head) if head else []
        return head, [e.name for e in self.entries if e.type == "tree"]

    def write(self, head: str | None, folder: str, pruned: list[str], message: str) -> str:
        gone = set(pruned) | {folder}
        root = [e.line for e in self.entries if e.name not in gone]
        root.append(f"040000 tree {self.folder_tree}\t{folder}")
        return self.repo.commit_and_push(self.repo.mktree(root), head, message)
