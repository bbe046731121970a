"""The one implementation of writing an orphan branch of the repository with the real git binary.

Two things the action keeps on branches of the repository itself go through here: the comment's
sample images (``sdopt-assets``, action/assets.py) and the results history (``sdopt-history``,
action/history_branch.py). Both branches share no history with the code and are only ever
fast-forwarded.

git runs in a throwaway bare repository (never the workspace's checkout): ``ls-remote`` and
``fetch --depth 1`` of the branch, ``hash-object``/``mktree``/``commit-tree``, a plain (never
forced) ``push``. The token reaches git only as an ``http.<server>/.extraheader`` in git's
environment (GIT_CONFIG_COUNT), never as an argument, a URL or a file; git runs with argument
lists, no shell, no user or system config.

Two jobs updating a branch at once is normal (a matrix, two pushes in a row): the loser's push is
refused as not a fast forward (:class:`Conflict`) and :func:`retry` makes its commit again from the
new head (no rebase: the tree is built again from the new head's), a few times.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

ATTEMPTS = 4
GIT_TIMEOUT_S = 120
BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
TOKEN_HINT = " (the token needs 'contents: write'; a fork's pull request never has it)"

T = TypeVar("T")


class BranchError(Exception):
    """Why the branch could not be read or written, in one line."""


class Conflict(Exception):
    """Another job moved (or created) the branch first: build the commit again on its head."""


def retry(step: Callable[[], T], *, attempts: int = ATTEMPTS, sleep=time.sleep
          ) -> tuple[T, int]:
    """``step()`` (read the head, plan, write), again after each :class:`Conflict`, up to
    ``attempts`` times: (its result, the attempt that succeeded); BranchError after the last."""
    for attempt in range(1, attempts + 1):
        try:
            return step(), attempt
        except Conflict as exc:
            if attempt == attempts:
                raise BranchError(str(exc)) from None
            sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def git_env(token: str | None, server_url: str, home: str,
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's environment: no user or system config, no prompt, the bot's identity, and the
    token only as an ``http.<server>/.extraheader`` (what actions/checkout configures, here
    in the environment: never an argument, a URL or a file)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k in ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY",
                    "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")}
    env.update({"HOME": home, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
                "GIT_AUTHOR_NAME": BOT_NAME, "GIT_AUTHOR_EMAIL": BOT_EMAIL,
                "GIT_COMMITTER_NAME": BOT_NAME, "GIT_COMMITTER_EMAIL": BOT_EMAIL,
                "GIT_CONFIG_COUNT": "0", "GIT_ALLOW_PROTOCOL": "https:http:file"})
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update({"GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": f"http.{server_url.rstrip('/')}/.extraheader",
                    "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}"})
    return env


def last_line(text: str, secrets: Iterable[str]) -> str:
    """git's last message line (hints left out), secrets masked, at most 300 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("hint:")]
    line = lines[-1] if lines else "no message"
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    return line[:300]


def repository_remote(server_url: str, repository: str) -> str:
    """The repository's URL on the server (where the branch is fetched from and pushed to)."""
    return f"{server_url.rstrip('/')}/{repository}.git"


def git_remote(workspace: str | os.PathLike | None, server_url: str, repository: str,
               base_env: Mapping[str, str] | None = None) -> str | None:
    """The URL to push to when ``workspace`` is a checkout of ``repository`` (its ``origin`` is
    the repository on ``server_url``) and git is installed; else None. Read with git's own config
    reader, nothing written."""
    if not workspace or shutil.which("git") is None or not Path(workspace, ".git").exists():
        return None
    with tempfile.TemporaryDirectory(prefix="sdopt-git-") as home:
        env = git_env(None, server_url, home, base_env)
        try:
            done = subprocess.run(["git", "-C", str(workspace), "config", "--get",
                                   "remote.origin.url"], capture_output=True, env=env,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
    url = done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else ""
    wanted = f"{server_url.rstrip('/')}/{repository}"
    if url.removesuffix("/").removesuffix(".git").lower() == wanted.lower():
        return wanted + ".git"
    return None


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a tree, as ``git ls-tree -l`` lists it (size: None for a tree)."""
    mode: str
    type: str
    sha: str
    name: str
    size: int | None = None

    @property
    def line(self) -> str:
        """The entry as ``git mktree`` reads it."""
        return f"{self.mode} {self.type} {self.sha}\t{self.name}"


class GitBranch:
    """One branch of ``remote``, read and written through a throwaway bare repository."""

    name = "git"

    def __init__(self, remote: str, branch: str, token: str | None, server_url: str, *,
                 what: str = "files"):
        if shutil.which("git") is None:
            raise BranchError("the git transport needs the git binary, which is not installed")
        self.remote, self.branch, self.token, self.what = remote, branch, token, what
        self.tmp = tempfile.TemporaryDirectory(prefix="sdopt-branch-")
        self.git_dir = Path(self.tmp.name) / "repo.git"
        self.env = git_env(token, server_url, self.tmp.name)
        self.secrets = [token or "", base64.b64encode(f"x-access-token:{token}".encode())
                        .decode() if token else ""]
        try:
            self.git("init", "--quiet", "--bare", str(self.git_dir), bare_init=True)
        except BaseException:
            self.tmp.cleanup()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.tmp.cleanup()

    def git(self, *args: str, stdin: bytes | None = None, check: bool = True,
            bare_init: bool = False) -> subprocess.CompletedProcess:
        cmd = ["git"] + ([] if bare_init else [f"--git-dir={self.git_dir}"]) + list(args)
        try:
            done = subprocess.run(cmd, input=stdin, capture_output=True, env=self.env,
                                  timeout=GIT_TIMEOUT_S, cwd=self.tmp.name, check=False)
        except subprocess.TimeoutExpired:
            raise BranchError(f"git {args[0]} on branch '{self.branch}' took over "
                              f"{GIT_TIMEOUT_S} s") from None
        if check and done.returncode != 0:
            raise BranchError(self.failure(args[0], done))
        return done

    def failure(self, what: str, done: subprocess.CompletedProcess) -> str:
        text = (done.stderr or b"").decode("utf-8", "replace")
        line = (f"git {what} to branch '{self.branch}' failed: "
                f"{last_line(text, self.secrets)}")
        if re.search(r"\b(403|401)\b|Authentication failed|Permission to .* denied|"
                     r"could not read Username", text):
            line += TOKEN_HINT
        return line

    def blob(self, data: bytes) -> str:
        return self.git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()

    def mktree(self, entries: Iterable[TreeEntry | str]) -> str:
        lines = [e.line if isinstance(e, TreeEntry) else e for e in entries]
        data = "".join(e + "\0" for e in lines).encode("utf-8", "surrogateescape")
        return self.git("mktree", "-z", stdin=data).stdout.decode().strip()

    def fetch_head(self) -> str | None:
        """The branch's head commit, fetched (depth 1); None when the branch does not exist."""
        ref = f"refs/heads/{self.branch}"
        listed = self.git("ls-remote", "--", self.remote, ref).stdout.decode()
        if not any(line.split("\t")[-1] == ref for line in listed.splitlines()):
            return None
        self.git("fetch", "--quiet", "--no-tags", "--depth=1", "--", self.remote,
                 f"+{ref}:refs/sdopt/head")
        return self.git("rev-parse", "--verify", "refs/sdopt/head^{commit}").stdout.decode() \
            .strip()

    def ls_tree(self, treeish: str) -> list[TreeEntry]:
        """The entries at the top of ``treeish`` (a commit or a tree)."""
        listing = self.git("ls-tree", "-z", "-l", treeish).stdout.decode("utf-8",
                                                                          "surrogateescape")
        out = []
        for item in listing.split("\0"):
            if not item:
                continue
            meta, name = item.split("\t", 1)
            mode, kind, sha, size = meta.split()
            out.append(TreeEntry(mode, kind, sha, name, int(size) if size.isdigit() else None))
        return out

    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """The contents of the blobs ``shas``, read in one ``cat-file --batch``."""
        shas = list(dict.fromkeys(shas))
        if not shas:
            return {}
        out = self.git("cat-file", "--batch", stdin="".join(s + "\n" for s in shas).encode()
                       ).stdout
        found, pos = {}, 0
        for sha in shas:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode().split()
            if len(header) != 3 or header[1] != "blob":
                raise BranchError(f"branch '{self.branch}': object {sha} is not a blob")
            size = int(header[2])
            found[sha] = out[end + 1:end + 1 + size]
            pos = end + 1 + size + 1
        return found

    def commit_and_push(self, tree: str, head: str | None, message: str) -> str:
        """A commit of ``tree`` on ``head`` (none: the branch's first, an orphan) pushed as the
        branch. Never forced: a push that is not a fast forward (someone else's commit landed
        first, or created the branch) is refused by the remote: :class:`Conflict`."""
        commit = self.git("commit-tree", tree, *(["-p", head] if head else []),
                          stdin=message.encode()).stdout.decode().strip()
        done = self.git("push", "--porcelain", "--quiet", "--", self.remote,
                        f"{commit}:refs/heads/{self.branch}", check=False)
        if done.returncode != 0:
            out = (done.stdout or b"").decode("utf-8", "replace") + \
                (done.stderr or b"").decode("utf-8", "replace")
            if re.search(r"\[rejected\]|non-fast-forward|fetch first|\[remote rejected\].*"
                         r"(cannot lock ref|failed to update ref)", out):
                raise Conflict(f"git push to branch '{self.branch}' was rejected: the branch "
                               f"kept moving (another job's {self.what} landed first)")
            raise BranchError(self.failure("push", done))
        return commit
