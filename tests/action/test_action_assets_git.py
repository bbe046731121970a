"""The comment's images pushed with the real git binary (action/assets.py, transport git) to a
local bare repository standing in for the repository on GitHub: the orphan branch, one folder
per run, pruning, a concurrent push, and the token kept off every command line (an HTTP
stand-in serving the bare repository with ``git http-backend`` checks the token arrives as
GitHub's checkout sends it)."""

import base64
import os
import shutil
import subprocess
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

from action import assets, gitbranch  # noqa: E402
from action.assets import PublishError, publish_images, run_folder  # noqa: E402
from sdopt.report.thumbnails import Thumbnail  # noqa: E402
from tests.action.test_action_assets import T0  # noqa: E402

REPO = "octo/widgets"
BRANCH = "sdopt-assets"
TOKEN = "ghs_s3cr3tT0kenValue"


def git(*args, cwd=None) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def bare(tmp_path):
    path = tmp_path / "remote" / "octo" / "widgets.git"
    path.parent.mkdir(parents=True)
    git("init", "--quiet", "--bare", str(path))
    return path


def files(tag: bytes = b"x"):
    return [Thumbnail("00-original.webp", "original", b"RIFF" + tag),
            Thumbnail("00-difference.webp", "difference", b"RIFF-d" + tag)]


def publish(bare, folder, **kw):
    kw.setdefault("token", TOKEN)
    return publish_images(files(folder.encode()), repository=REPO, folder=folder,
                          transport="git", remote=str(bare), sleep=lambda s: None, **kw)


def branch_files(bare, ref=BRANCH) -> dict[str, bytes]:
    names = git(f"--git-dir={bare}", "ls-tree", "-r", "--name-only", ref).split()
    return {n: subprocess.run(["git", f"--git-dir={bare}", "cat-file", "blob", f"{ref}:{n}"],
                              capture_output=True, check=True).stdout for n in names}


def head(bare) -> str:
    return git(f"--git-dir={bare}", "rev-parse", f"refs/heads/{BRANCH}").strip()


def test_first_run_pushes_an_orphan_branch_with_the_runs_folder(bare):
    folder = run_folder("41", "1", now=T0)
    done = publish(bare, folder)
    assert done.transport == "git" and done.commit == head(bare)
    assert git(f"--git-dir={bare}", "rev-list", "--parents", "-n1", done.commit).split() \
        == [done.commit]                                     # no parent: shares no history
    assert branch_files(bare) == {f"{folder}/00-original.webp": b"RIFF" + folder.encode(),
                                  f"{folder}/00-difference.webp": b"RIFF-d" + folder.encode()}
    assert done.base_url == f"https://github.com/{REPO}/raw/{done.commit}/{folder}"
    author = git(f"--git-dir={bare}", "log", "-1", "--format=%an <%ae>|%s", done.commit)
    assert author.strip() == (f"{assets.BOT_NAME} <{assets.BOT_EMAIL}>|"
                              f"sdopt: comment images of run {folder}")


def test_later_runs_fast_forward_and_prune_the_oldest(bare):
    folders = [run_folder(str(i), "1", now=T0 + timedelta(minutes=i)) for i in range(5)]
    done = [publish(bare, f, keep_runs=3) for f in folders]
    assert {p.split("/")[0] for p in branch_files(bare)} == set(folders[2:])
    assert done[3].pruned == [folders[0]] and done[4].pruned == [folders[1]]
    for d in done:                                            # never forced: all on the branch
        subprocess.run(["git", f"--git-dir={bare}", "merge-base", "--is-ancestor", d.commit,
                        head(bare)], check=True)
    # An old comment's links stay valid: the pruned run is still in the commit it linked.
    old = branch_files(bare, done[0].commit)
    assert f"{folders[0]}/00-original.webp" in old


def test_nothing_is_written_outside_the_runs_folder(bare, tmp_path):
    """Other files on the branch (a README, a folder that is not a run's) are kept; a commit
    changes only its own folder and the pruned ones; no checkout is written to."""
    work = tmp_path / "work"
    git("init", "--quiet", "-b", BRANCH, str(work))
    (work / "README.md").write_text("images of sdopt's PR comments\n")
    (work / "notes").mkdir()
    (work / "notes" / "keep.txt").write_text("not a run\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "readme", cwd=work)
    git("push", "--quiet", str(bare), f"{BRANCH}:{BRANCH}", cwd=work)
    folders = [run_folder(str(i), "1", now=T0 + timedelta(minutes=i)) for i in range(3)]
    done = [publish(bare, f, keep_runs=1) for f in folders]
    assert set(branch_files(bare)) == {"README.md", "notes/keep.txt",
                                       f"{folders[2]}/00-original.webp",
                                       f"{folders[2]}/00-difference.webp"}
    for d in done[1:]:
        changed = git(f"--git-dir={bare}", "diff-tree", "-r", "--name-only", "--no-commit-id",
                      f"{d.commit}^", d.commit).split()
        assert {c.split("/")[0] for c in changed} == {d.folder, *d.pruned}
    assert git("status", "--porcelain", cwd=work) == ""


def test_a_concurrent_push_is_built_again_on_the_new_head(bare, monkeypatch):
    """Another job's push lands between our fetch and our push: git refuses ours (not a fast
    forward), and the commit is made again on their head: nobody's run is lost."""
    first = run_folder("1", "1", now=T0)
    publish(bare, first)
    theirs = run_folder("2", "1", now=T0 + timedelta(minutes=1))
    real_write = assets._GitWriter.write
    calls = []

    def write(self, head_sha, folder, pruned, message):
        calls.append(head_sha)
        if len(calls) == 1:                 # the other job, with its own real push
            monkeypatch.setattr(assets._GitWriter, "write", real_write)
            publish(bare, theirs)
            monkeypatch.setattr(assets._GitWriter, "write", write)
        return real_write(self, head_sha, folder, pruned, message)

    monkeypatch.setattr(assets._GitWriter, "write", write)
    mine = run_folder("3", "1", now=T0 + timedelta(minutes=2))
    done = publish(bare, mine)
    assert done.attempts == 2 and calls[0] != calls[1]
    assert {p.split("/")[0] for p in branch_files(bare)} == {first, theirs, mine}
    assert git(f"--git-dir={bare}", "rev-parse", f"{done.commit}^").strip() == calls[1]


def test_two_jobs_creating_the_branch_at_once(bare, monkeypatch):
    theirs = run_folder("1", "1", now=T0)
    real_write = assets._GitWriter.write
    calls = []

    def write(self, head_sha, folder, pruned, message):
        calls.append(head_sha)
        if len(calls) == 1:
            monkeypatch.setattr(assets._GitWriter, "write", real_write)
            publish(bare, theirs)
            monkeypatch.setattr(assets._GitWriter, "write", write)
        return real_write(self, head_sha, folder, pruned, message)

    monkeypatch.setattr(assets._GitWriter, "write", write)
    done = publish(bare, run_folder("2", "1", now=T0 + timedelta(minutes=1)))
    assert calls[0] is None and calls[1] is not None and done.attempts == 2
    assert {p.split("/")[0] for p in branch_files(bare)} == {theirs, done.folder}


def test_a_branch_that_keeps_moving_gives_up_in_one_line(bare, monkeypatch):
    publish(bare, run_folder("1", "1", now=T0))
    real_write = assets._GitWriter.write
    n = []

    def write(self, head_sha, folder, pruned, message):
        n.append(1)
        monkeypatch.setattr(assets._GitWriter, "write", real_write)
        publish(bare, run_folder(str(100 + len(n)), "1", now=T0 + timedelta(minutes=len(n))))
        monkeypatch.setattr(assets._GitWriter, "write", write)
        return real_write(self, head_sha, folder, pruned, message)

    monkeypatch.setattr(assets._GitWriter, "write", write)
    with pytest.raises(PublishError, match="rejected.*kept moving") as info:
        publish(bare, run_folder("2", "1", now=T0 + timedelta(hours=1)))
    assert len(n) == assets.ATTEMPTS and "\n" not in str(info.value)


def test_the_token_is_never_an_argument_and_never_printed(bare, monkeypatch):
    seen = []
    real_run = subprocess.run

    def run(cmd, *a, **kw):
        assert isinstance(cmd, list) and not kw.get("shell")          # argument lists only
        seen.append((cmd, kw.get("env") or {}))
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(gitbranch.subprocess, "run", run)
    publish(bare, run_folder("1", "1", now=T0))
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert any("push" in cmd for cmd, _ in seen) and any("ls-remote" in cmd for cmd, _ in seen)
    for cmd, env in seen:
        assert not any(TOKEN in part or basic in part for part in cmd)
        assert [k for k, v in env.items() if TOKEN in v or basic in v] == ["GIT_CONFIG_VALUE_0"]
        assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
        assert env["GIT_CONFIG_GLOBAL"] == os.devnull and env["GIT_CONFIG_NOSYSTEM"] == "1"
        assert env["GIT_TERMINAL_PROMPT"] == "0"


# --- over HTTP: git http-backend behind a token check, as GitHub's git server ----------------

class _GitHttp(BaseHTTPRequestHandler):
    root = ""
    token = ""
    pushes: list = []

    def log_message(self, *args):
        pass

    def _serve(self):
        expected = "basic " + base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        if (self.headers.get("Authorization") or "").lower() != expected.lower():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": self.root,
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
               "REQUEST_METHOD": self.command, "REMOTE_USER": "x-access-token",
               "CONTENT_TYPE": self.headers.get("Content-Type") or "",
               "CONTENT_LENGTH": str(len(body)), "GIT_CONFIG_NOSYSTEM": "1",
               "HOME": self.root, "HTTP_CONTENT_ENCODING":
                   self.headers.get("Content-Encoding") or "",
               "GIT_PROTOCOL": self.headers.get("Git-Protocol") or ""}
        if path.endswith("git-receive-pack"):
            type(self).pushes.append(path)
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                             check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve


@pytest.fixture
def git_server(bare):
    handler = type("Handler", (_GitHttp,), {"root": str(bare.parent.parent), "token": TOKEN,
                                           "pushes": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_over_http_the_token_goes_as_githubs_extraheader(bare, git_server):
    url, handler = git_server
    folder = run_folder("1", "1", now=T0)
    done = publish_images(files(), token=TOKEN, repository=REPO, folder=folder, transport="git",
                          server_url=url, sleep=lambda s: None)    # remote: SERVER/REPO.git
    assert done.commit == head(bare) and handler.pushes == ["/octo/widgets.git/git-receive-pack"]
    assert done.base_url == f"{url}/{REPO}/raw/{done.commit}/{folder}"
    second = publish_images(files(b"2"), token=TOKEN, repository=REPO, transport="git",
                            folder=run_folder("2", "1", now=T0 + timedelta(minutes=1)),
                            server_url=url, sleep=lambda s: None)
    assert git(f"--git-dir={bare}", "rev-parse", f"{second.commit}^").strip() == done.commit


def test_over_http_a_refused_token_says_why_in_one_line(bare, git_server):
    url, _ = git_server
    wrong = "ghs_wrongTokenValue"
    with pytest.raises(PublishError, match="contents: write") as info:
        publish_images(files(), token=wrong, repository=REPO, transport="git",
                       folder=run_folder("1", "1", now=T0), server_url=url, sleep=lambda s: None)
    text = str(info.value)
    assert "\n" not in text and wrong not in text and "x-access-token" not in text
    assert not git(f"--git-dir={bare}", "for-each-ref").strip()       # nothing pushed


def test_the_workspace_checkout_picks_the_git_transport(tmp_path):
    ws = tmp_path / "ws"
    git("init", "--quiet", str(ws))
    git("remote", "add", "origin", f"https://github.com/{REPO}", cwd=ws)
    assert assets.git_remote(ws, "https://github.com", REPO) == f"https://github.com/{REPO}.git"
    assert assets.git_remote(ws, "https://github.com", "octo/other") is None
    assert assets.git_remote(ws, "https://ghe.example", REPO) is None
    assert assets.git_remote(tmp_path, "https://github.com", REPO) is None     # no checkout
    assert assets.git_remote(None, "https://github.com", REPO) is None


def test_the_action_pushes_with_git_from_a_checkout_and_updates_one_comment(tmp_path, bare):
    """Through the entrypoint: the workspace is a checkout of the repository, so the default
    assets_transport (auto) pushes with git (here to the bare repository, the server being a
    file:// URL); the API's git data endpoints are not used; later runs update the one comment
    with their own folder's links, and the oldest run beyond assets_keep_runs is pruned."""
    pytest.importorskip("github", reason="PyGithub is not installed")
    from action import main as entry
    from tests.action.test_action_images import same_repo_publish
    from tests.fake_github import FakeGitHub, State, Token

    server = f"file://{bare.parent.parent}"
    ws = tmp_path / "ws"
    git("init", "--quiet", str(ws))
    git("remote", "add", "origin", f"{server}/{REPO}", cwd=ws)
    with FakeGitHub(State(tokens={"rw": Token("github-actions[bot]")})) as gh:
        env = same_repo_publish(tmp_path, gh, assets_keep_runs="2")
        env.update({"GITHUB_WORKSPACE": str(ws), "GITHUB_SERVER_URL": server})
        for run_id in ("11", "12", "13"):
            assert entry.main(env={**env, "GITHUB_RUN_ID": run_id}) == 0
        assert not [r for r in gh.state.requests if "/git/" in r[1]]
        assert len(gh.state.comments[7]) == 1
        body = gh.state.comments[7][0].body
    files = branch_files(bare)
    folders = sorted({p.split("/")[0] for p in files})
    assert [f[-5:] for f in folders] == ["-12-1", "-13-1"]           # run 11 pruned
    assert f"({server}/{REPO}/raw/{head(bare)}/{folders[-1]}/00-optimized.webp)" in body
    assert git("status", "--porcelain", cwd=ws) == ""               # the checkout untouched
