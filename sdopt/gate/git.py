"""sdopt's own git calls, run through one helper.

In CI the repository often belongs to another user than the process (GitHub's workspace is the
runner's, uid 1001, while a container runs as root), and git then refuses it as of "dubious
ownership". sdopt only reads the repository (a committed baseline, the base revision of a PR),
so its calls say ``-c safe.directory=<that repository>``: that one repository, not ``*``, and
nothing written to the user's git configuration.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import SdoptError


def enclosing_worktree(start: str | os.PathLike) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (what git itself would
    discover), resolved as git compares it with ``safe.directory``; None outside a repository."""
    here = Path(start).resolve()
    if not here.is_dir():
        here = here.parent
    for candidate in (here, *here.parents):
        try:
            if (candidate / ".git").exists():
                return candidate
        except OSError:  # an unreadable folder on the way up: git would stop there too
            return None
    return None


def git_command(args: list[str], cwd: str | os.PathLike) -> list[str]:
    """``git`` with ``args``, allowed to read the repository holding ``cwd`` whoever owns it."""
    worktree = enclosing_worktree(cwd)
    safe = ["-c", f"safe.directory={worktree}"] if worktree is not None else []
    return ["git", *safe, *args]


def run_git(args: list[str], cwd: str | os.PathLike, *, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run git in ``cwd`` (bytes output); with ``check`` a failure is one SdoptError line."""
    cwd = Path(cwd)
    try:
        proc = subprocess.run(git_command(args, cwd), cwd=cwd, capture_output=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise SdoptError("reading from git needs the 'git' command, which is not "
                         "installed") from None
    except subprocess.TimeoutExpired:
        raise SdoptError(f"git {' '.join(args)} in '{cwd}' did not finish within "
                         f"{timeout:.0f} s") from None
    except NotADirectoryError:
        raise SdoptError(f"git {' '.join(args)}: '{cwd}' is not a directory") from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SdoptError(f"git {' '.join(args)} failed in '{cwd}': {err[-1] if err else 'error'}")
    return proc


def repo_root(start: str | os.PathLike) -> Path:
    """The top of the git repository holding ``start`` (an SdoptError outside one)."""
    proc = run_git(["rev-parse", "--show-toplevel"], cwd=Path(start))
    return Path(proc.stdout.decode().strip())


def find_repo_root(start: str | os.PathLike) -> Path | None:
    """:func:`repo_root`, or None when ``start`` is not in a repository or git is missing."""
    try:
        return repo_root(start)
    except SdoptError:
        return None
