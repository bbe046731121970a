"""sdopt's own git calls (sdopt/gate/git.py) on a repository owned by another user, as on a
GitHub runner (workspace uid 1001) with a container running as root: plain git refuses it as of
"dubious ownership", sdopt's calls read it (safe.directory for that repository only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sdopt.gate.baseline import extract_from_git, repo_root
from sdopt.gate.git import find_repo_root, run_git
from sdopt.gate.same_job import _committed

RUNNER_UID = 1001
ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=ENV)


@pytest.fixture
def foreign_repo(tmp_path):
    """A committed repository owned by uid 1001 while the tests run as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the repository to another uid")
    repo = tmp_path / "workspace"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "file.txt").write_text("committed\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"]):
        assert _git(repo, *args).returncode == 0
    subprocess.run(["chown", "-R", str(RUNNER_UID), str(repo)], check=True)
    return repo


def test_plain_git_refuses_a_repository_of_another_user_and_sdopts_calls_read_it(
        foreign_repo, tmp_path, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)  # git trusts SUDO_UID's repositories as root
    refused = _git(foreign_repo / "sub", "rev-parse", "--show-toplevel")
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr
    assert repo_root(foreign_repo / "sub") == foreign_repo.resolve()
    assert find_repo_root(foreign_repo / "sub") == foreign_repo.resolve()
    assert _committed("main", "sub/file.txt", foreign_repo)
    assert not _committed("main", "sub/missing.txt", foreign_repo)
    dest = tmp_path / "extracted"
    dest.mkdir()
    extract_from_git("main", ["sub/file.txt"], foreign_repo, dest)
    assert (dest / "sub" / "file.txt").read_text() == "committed\n"
    # The exception is per call: nothing is added to the user's git configuration.
    assert "safe.directory" not in _git(foreign_repo, "config", "--list", "--show-origin").stdout


def test_as_the_runner_user_on_a_root_owned_repository(request):
    """The other direction (a later step as uid 1001 reading a repository root made), with the
    real setpriv: sdopt's call from a fresh interpreter running as that uid."""
    if os.geteuid() != 0 or not any(os.access(os.path.join(p, "setpriv"), os.X_OK)
                                    for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("needs root and setpriv")
    # pytest's own tmp_path is private to root: a world-readable folder for uid 1001.
    base = Path(tempfile.mkdtemp(prefix="sdopt-git-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    repo = base / "repo"
    repo.mkdir()
    assert _git(repo, "init", "-q").returncode == 0
    code = ("import sys; from sdopt.gate.git import repo_root; "
            "print(repo_root(sys.argv[1]))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**ENV, "HOME": str(base), "PYTHONPATH": root}
    proc = subprocess.run(["setpriv", f"--reuid={RUNNER_UID}", f"--regid={RUNNER_UID}",
                           "--clear-groups", sys.executable, "-c", code, str(repo)],
                          capture_output=True, text=True, env=env, cwd=base)
    if "Permission denied" in proc.stderr or "No module named" in proc.stderr:
        pytest.skip(f"uid {RUNNER_UID} cannot run this interpreter: {proc.stderr[-200:]}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(repo.resolve())
    plain = subprocess.run(["setpriv", f"--reuid={RUNNER_UID}", f"--regid={RUNNER_UID}",
                            "--clear-groups", "git", "rev-parse", "--show-toplevel"],
                           capture_output=True, text=True, env=env, cwd=repo)
    assert "dubious ownership" in plain.stderr


def test_outside_a_repository_is_one_line(tmp_path):
    assert find_repo_root(tmp_path) is None
    proc = run_git(["status"], tmp_path, check=False)
    assert proc.returncode != 0
