"""The PR comment with its sample images as a reviewer sees it: the action's comment mode posts
to the fake GitHub (tests/fake_github.py), the comment's markdown is rendered to HTML
(markdown-it, GitHub's table syntax), and headless Chromium opens it with every image loading
from a local server standing in for github.com's raw files of the assets branch.

``python -m tests.action.test_action_comment_browser OUT.png`` writes the screenshot kept in
docs/ (docs/comment-screenshot.png)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import event, main as entry  # noqa: E402
from tests.action.test_action_main import SHA, runner_env  # noqa: E402
from tests.cdp import Browser, find_chromium  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
CSS = """body{font:14px -apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1000px;
margin:24px auto;color:#1f2328}table{border-collapse:collapse}td,th{border:1px solid #d1d9e0;
padding:6px 10px}img{max-width:160px}blockquote{color:#59636e;border-left:4px solid #d1d9e0;
margin:0;padding:0 12px}"""
CHECK = ("JSON.stringify([...document.images].map(i => [i.getAttribute('src'), i.complete, "
         "i.naturalWidth]))")


def same_job_artifact(root: Path) -> Path:
    """The recorded report fixtures shaped as a same-job gate run's artifact (the base commit's
    results under base/), so the comment has every column."""
    art = root / "artifact"
    shutil.copytree(DATA / "current", art)
    shutil.copytree(DATA / "baseline", art / "base")
    doc = json.loads((art / "results.json").read_text())
    doc["config"]["same_job"] = {"base_ref": "b" * 40, "side": "head", "job": "screenshot"}
    (art / "results.json").write_text(json.dumps(doc))
    shutil.copy(DATA / "verdict-regression.json", art / "verdict.json")
    (art / event.CONTEXT_FILE).write_text(json.dumps(
        {"repository": "octo/widgets", "number": 7, "head_sha": SHA,
         "head_repository": "mallory/widgets", "event_name": "pull_request"}))
    return art


@contextmanager
def raw_server(state: State):
    """github.com's ``/OWNER/REPO/raw/COMMIT/PATH`` for the fake's objects (404 otherwise)."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = self.path.split("/", 5)      # '', owner, repo, 'raw', commit, path
            data = None
            if len(parts) == 6 and parts[3] == "raw" and parts[4] in state.commits:
                files = {p: state.blobs[s] for p, (_, s) in
                         state.flat(state.commits[parts[4]]["tree"]).items()}
                data = files.get(parts[5])
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "image/webp" if data is not None else "text/plain")
            self.end_headers()
            self.wfile.write(data if data is not None else b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def comment_page(body: str, base: str, out: Path) -> Path:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    html = md.render(body.replace("https://github.com/", base + "/"))
    out.write_text(f"<!doctype html><meta charset=utf-8><style>{CSS}</style>{html}",
                   encoding="utf-8")
    return out


def shoot(tmp: Path, out_png: Path | None, chromium: str) -> tuple[str, list, list, list]:
    state = State(tokens={"rw": Token("github-actions[bot]")})
    with FakeGitHub(state) as gh:
        env = runner_env(tmp, gh, mode="comment", artifact_dir=same_job_artifact(tmp))
        assert entry.main(env={**env, "GITHUB_RUN_ID": "4242"}) == 0
    body = state.comments[7][0].body
    with raw_server(state) as base, Browser(chromium, width=1100, height=900) as browser:
        page = comment_page(body, base, tmp / "comment.html")
        browser.open(page.as_uri())
        browser.wait_until("[...document.images].every(i => i.complete)", timeout=60)
        images = json.loads(browser.evaluate(CHECK))
        if out_png is not None:
            # The images are in a collapsed <details>, as on GitHub: open it, as a reviewer does.
            browser.evaluate("document.querySelectorAll('details').forEach(d => { if ("
                             "d.querySelector('summary').textContent.includes('Sample')) "
                             "d.open = true; })")
            browser.screenshot(out_png, max_height=2400)
        return body, images, browser.console_errors(), browser.requested_urls()


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the comment was not "
                    "checked in a browser")
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    pytest.importorskip("markdown_it", reason="markdown-it-py is not installed")
    return path


def test_the_comment_shows_every_image_from_the_branch(chromium, tmp_path):
    body, images, errors, urls = shoot(tmp_path, tmp_path / "comment.png", chromium)
    assert len(images) == 8                     # 2 prompts x original, optimized, baseline, diff
    assert all(ok and width > 0 for _, ok, width in images), images
    assert all("/octo/widgets/raw/" in src for src, _, _ in images)
    assert errors == [], errors
    assert not [u for u in urls if u.startswith("http") and "127.0.0.1" not in u]
    assert len(body) < 65536 and "Sample images not shown" not in body


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        shoot(Path(tmp), Path(sys.argv[1]), find_chromium())
