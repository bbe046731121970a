"""The results history kept on an orphan branch of the repository (the ``history_branch`` input,
e.g. ``sdopt-history``), through the same git plumbing as the comment's images
(action/gitbranch.py).

The branch holds the history directory as ``sdopt history add`` writes it, in a ``runs`` folder:
one ``<UTC time added>_<commit>_<random>.json`` file per run (sdopt/gate/results_history.py owns
the names, the schema, and which entries the bound deletes). Nothing else on the branch is
touched.

- :func:`read_history`: the branch's entries copied into a new local history directory (each
  validated; only regular files named as entries, no larger than any entry sdopt writes), for the
  report's trend chart. Every run does this, a pull request's too.
- :func:`append_entry`: one commit on the branch's head adding this run's file and deleting the
  oldest beyond ``max_runs``, pushed plainly (never forced). When another job's push landed
  first, the push is refused and the commit is built again on the new head (gitbranch.retry).
  The action calls it only on a push to the default branch (action/event.py history_refusal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdopt.gate.results_history import (ENTRY_NAME, MAX_ENTRY_BYTES, copy_entries,
                                        pruned_names)
from sdopt.store import MARKER_NAME

from .gitbranch import BranchError, GitBranch, TreeEntry, retry

DEFAULT_BRANCH = "sdopt-history"
RUNS_FOLDER = "runs"
__all__ = ["BranchError", "DEFAULT_BRANCH", "RUNS_FOLDER", "Appended", "Fetched",
           "append_entry", "open_branch", "read_history"]


@dataclass
class Fetched:
    head: str | None                # None: the branch does not exist yet
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # entries on the branch that were not read


@dataclass
class Appended:
    commit: str
    name: str
    pruned: list[str]
    attempts: int


def open_branch(remote: str, branch: str, token: str | None, server_url: str) -> GitBranch:
    return GitBranch(remote, branch, token, server_url, what="history entry")


def _runs(repo: GitBranch, head: str | None) -> tuple[list[TreeEntry], list[TreeEntry]]:
    """The branch's top-level entries and those of its ``runs`` folder."""
    if head is None:
        return [], []
    root = repo.ls_tree(head)
    folder = [e for e in root if e.name == RUNS_FOLDER and e.type == "tree"]
    return root, (repo.ls_tree(folder[0].sha) if folder else [])


def read_history(repo: GitBranch, directory: str | Path) -> Fetched:
    """The branch's history copied into ``directory`` (which must not exist; not made when the
    branch has no entry). Entries that are not regular files of an entry's name and size (a
    link, a folder, something larger than sdopt writes) are skipped and named in ``skipped``
    (sdopt's marker, which ``sdopt history add`` on a worktree of the branch leaves, is not);
    an entry that does not follow the schema is one SdoptError line naming the branch."""
    head = repo.fetch_head()
    _, runs = _runs(repo, head)
    wanted = [e for e in runs if e.type == "blob" and e.mode == "100644"
              and ENTRY_NAME.fullmatch(e.name) and (e.size or 0) <= MAX_ENTRY_BYTES]
    skipped = [e.name for e in runs if e not in wanted and e.name != MARKER_NAME]
    if not wanted:
        return Fetched(head, [], skipped)
    data = repo.blobs(e.sha for e in wanted)
    runs_read = copy_entries(directory, {e.name: data[e.sha] for e in wanted},
                             source=f"history branch '{repo.branch}'")
    return Fetched(head, runs_read, skipped)


def commit_message(name: str, pruned: list[str]) -> str:
    return (f"sdopt: history entry {name}"
            + (f", pruned {len(pruned)} older" if pruned else ""))


def append_entry(repo: GitBranch, name: str, data: bytes, *, max_runs: int,
                 sleep=time.sleep) -> Appended:
    """Add ``data`` as ``runs/<name>`` on the branch (created as an orphan when missing), and
    delete the oldest entries beyond ``max_runs``, in one commit pushed without force; rebuilt
    on the new head when another job's push landed first. BranchError says why not."""
    if not ENTRY_NAME.fullmatch(name) or len(data) > MAX_ENTRY_BYTES:
        raise BranchError(f"refused to add '{name}' to branch '{repo.branch}': not a results "
                          "history entry sdopt writes")
    blob = repo.blob(data)

    def step() -> tuple[str, list[str]]:
        head = repo.fetch_head()
        root, runs = _runs(repo, head)
        pruned = pruned_names([e.name for e in runs if e.name != name] + [name], max_runs)
        kept = [e for e in runs if e.name not in pruned and e.name != name]
        if name not in pruned:
            kept.append(TreeEntry("100644", "blob", blob, name))
        folder = repo.mktree(kept)
        top = [e for e in root if e.name != RUNS_FOLDER]
        top.append(TreeEntry("040000", "tree", folder, RUNS_FOLDER))
        return repo.commit_and_push(repo.mktree(top), head,
                                    commit_message(name, pruned)), pruned

    (commit, pruned), attempts = retry(step, sleep=sleep)
    return Appended(commit, name, pruned, attempts)
