"""A local stand-in for the GitHub REST API's issue-comment endpoints (tests only).

GitHub cannot be reached from here, so the action's PR-comment code is tested against this
server, which follows GitHub's documented contract for what the action uses:
- ``Authorization: token|Bearer T``; unknown tokens get 401 ``Bad credentials``;
- ``GET /user`` is 403 "Resource not accessible by integration" for installation tokens
  (what GITHUB_TOKEN is) and the user for personal tokens;
- ``POST /graphql`` answers ``query { viewer { login } }`` with the token's login (for an
  installation token, its app's bot: ``github-actions[bot]``, ``my-app[bot]``); other queries
  get GraphQL's ``errors`` list with status 200;
- ``GET /repos/{o}/{r}``, ``/issues/{n}``, ``/pulls/{n}``; 404 ``Not Found`` bodies;
- ``GET /repos/{o}/{r}/issues/{n}/comments`` paginated with ``per_page``/``page`` (30 by default,
  at most 100) and a ``Link`` header with next/last/first/prev as GitHub sends it;
- ``POST`` there creates (201 and ``Location``); ``PATCH /repos/{o}/{r}/issues/comments/{id}``
  edits (200); a read-only token gets 403, a body over 65,536 characters 422 ``Validation Failed``;
- every answer carries the ``X-RateLimit-*`` headers;
- the git data API (docs.github.com/rest/git), on a real object store (blob SHAs are git's):
  ``POST /git/blobs`` (201), ``GET /git/commits/{sha}``, ``GET``/``POST /git/trees`` (nested
  paths; ``base_tree``; an entry's type and mode must agree; ``"type": "tree"`` with a tree's
  sha places that tree; ``"sha": null`` deletes the *file* at the path, 422 when no file is
  there, a folder's path included: the documented contract deletes files, not folders),
  ``POST /git/commits`` (201, 422 for an unknown tree or parent), ``GET /git/ref/{ref}`` (404),
  ``POST /git/refs`` (201; 422 "Reference already exists"), ``PATCH /git/refs/{ref}`` (422
  "Update is not a fast forward" unless ``force``; 422 "Reference does not exist"); 409 "Git
  Repository is empty." on a repository with no commit; 403 for a read-only token;
  ``State.before_ref_write`` runs once before the next ref write (a concurrent job's push);
- the checks API (docs.github.com/rest/checks/runs): ``POST /repos/{o}/{r}/check-runs`` creates
  a check run (201 and ``Location``); ``name`` and ``head_sha`` are required, ``conclusion``
  with ``status: completed``, ``output.title`` and ``output.summary`` with ``output``, and
  ``summary``/``text`` hold at most 65,535 characters (422 otherwise); a commit the repository
  does not have is 422 "No commit found for SHA: ..."; only a GitHub App's installation token
  with ``checks: write`` may create one: a personal token gets 403 "You must authenticate via a
  GitHub App.", an installation token without the permission (a fork's read-only token) 403
  "Resource not accessible by integration"; ``GET /repos/{o}/{r}/check-runs/{id}``.
It keeps every request, so tests can assert what was (not) called.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from typing import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DOCS = "https://docs.github.com/rest"
BODY_LIMIT = 65536
# (type, mode) pairs a tree entry may have (docs.github.com/rest/git/trees#create-a-tree)
TREE_KINDS = {("blob", "100644"), ("blob", "100755"), ("blob", "120000"), ("tree", "040000"),
              ("commit", "160000")}


@dataclass
class Token:
    login: str              # the author of the comments this token makes
    write: bool = True
    installation: bool = True   # GITHUB_TOKEN-like: cannot read GET /user
    # permissions: contents: write (the git data API's writes); a workflow's default
    # GITHUB_TOKEN often has pull-requests: write without it
    contents_write: bool = True
    # permissions: checks: write (check runs); a workflow that lists its permissions without it
    # gets 403 on POST /check-runs
    checks_write: bool = True


@dataclass
class Comment:
    id: int
    body: str
    login: str
    created_at: str = "2026-01-01T00:00:00Z"
    updated_at: str = "2026-01-01T00:00:00Z"


@dataclass
class State:
    repository: str = "octo/widgets"
    pulls: dict[int, str] = field(default_factory=lambda: {7: "a" * 40})   # number -> head sha
    comments: dict[int, list[Comment]] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1000
    # git data: objects by sha (blobs: bytes; trees: {name: (mode, type, sha)}; commits: dicts)
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict] = field(default_factory=dict)
    commits: dict[str, dict] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)      # "refs/heads/x" -> commit sha
    git_empty: bool = False
    # GET /git/trees answers "truncated": true (GitHub's answer past its listing limits)
    trees_truncated: bool = False
    before_ref_write: list[Callable[["State"], None]] = field(default_factory=list)
    check_runs: list[dict] = field(default_factory=list)
    # commits a check run may be put on, besides the pull requests' heads
    commit_shas: set[str] = field(default_factory=set)

    def add_comment(self, number: int, body: str, login: str) -> Comment:
        self.next_id += 1
        c = Comment(self.next_id, body, login)
        self.comments.setdefault(number, []).append(c)
        return c


    # -- git objects -------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.blobs[sha] = data
        return sha

    def put_tree(self, entries: dict) -> str:
        raw = json.dumps(sorted(entries.items())).encode()
        sha = hashlib.sha1(b"tree %d\0" % len(raw) + raw).hexdigest()
        self.trees[sha] = dict(entries)
        return sha

    def flat(self, tree_sha: str, prefix: str = "") -> dict[str, tuple[str, str]]:
        """Every blob under a tree: full path -> (mode, sha)."""
        out = {}
        for name, (mode, kind, sha) in self.trees[tree_sha].items():
            if kind == "tree":
                out.update(self.flat(sha, f"{prefix}{name}/"))
            else:
                out[prefix + name] = (mode, sha)
        return out

    def build(self, flat: dict[str, tuple[str, str]]) -> str:
        children: dict[str, dict] = {}
        entries = {}
        for path, (mode, sha) in flat.items():
            head, _, rest = path.partition("/")
            if rest:
                children.setdefault(head, {})[rest] = (mode, sha)
            else:
                entries[head] = (mode, "blob", sha)
        for name, sub in children.items():
            entries[name] = ("040000", "tree", self.build(sub))
        return self.put_tree(entries)

    def put_commit(self, tree: str, parents: list[str], message: str) -> str:
        raw = json.dumps([tree, parents, message, len(self.commits)]).encode()
        sha = hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest()
        self.commits[sha] = {"tree": tree, "parents": list(parents), "message": message}
        return sha

    def ancestors(self, sha: str) -> set[str]:
        seen, todo = set(), [sha]
        while todo:
            c = todo.pop()
            if c not in seen:
                seen.add(c)
                todo += self.commits[c]["parents"]
        return seen

    def files(self, branch: str) -> dict[str, bytes]:
        """What a checkout of ``branch`` would hold: path -> bytes."""
        tree = self.commits[self.refs[f"refs/heads/{branch}"]]["tree"]
        return {p: self.blobs[sha] for p, (_, sha) in self.flat(tree).items()}


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeGitHub/1.0"
    state: State

    def log_message(self, *args):   # quiet
        pass

    # -- helpers -------------------------------------------------------------------------
    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _send(self, status: int, payload, headers: dict | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-RateLimit-Limit", "5000")
        self.send_header("X-RateLimit-Remaining", "4990")
        self.send_header("X-RateLimit-Reset", "1999999999")
        self.send_header("X-RateLimit-Used", "10")
        self.send_header("X-RateLimit-Resource", "core")
        self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, **extra) -> bool:
        """Answer with GitHub's error body; True, so that ``refused = ...; if refused: return``
        stops the handler (GitHub changes nothing on an error)."""
        self._send(status, {"message": message, "documentation_url": DOCS, "status": str(status),
                            **extra})
        return True

    def _token(self) -> Token | None:
        auth = self.headers.get("Authorization", "")
        m = re.fullmatch(r"(?:token|Bearer) (\S+)", auth)
        return self.state.tokens.get(m.group(1)) if m else None

    def _comment_json(self, c: Comment, number: int) -> dict:
        repo = self.state.repository
        return {"id": c.id, "node_id": f"IC_{c.id}",
                "url": f"{self.base}/repos/{repo}/issues/comments/{c.id}",
                "html_url": f"https://github.com/{repo}/pull/{number}#issuecomment-{c.id}",
                "issue_url": f"{self.base}/repos/{repo}/issues/{number}",
                "body": c.body, "created_at": c.created_at, "updated_at": c.updated_at,
                "author_association": "NONE",
                "user": {"login": c.login, "id": abs(hash(c.login)) % 10**8,
                         "type": "Bot" if c.login.endswith("[bot]") else "User"}}

    def _read_body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _route(self, method: str):
        url = urlparse(self.path)
        self.state.requests.append((method, url.path))
        token = self._token()
        if token is None:
            return self._error(401, "Bad credentials")
        repo = self.state.repository
        path = url.path
        if path == "/graphql" and method == "POST":
            data = self._read_body() or {}
            query = " ".join(str(data.get("query", "")).split())
            if query == "query { viewer { login } }":
                return self._send(200, {"data": {"viewer": {"login": token.login}}})
            return self._send(200, {"errors": [{"message": "this fake answers only the viewer "
                                                           "login query"}]})
        if path == "/user" and method == "GET":
            if token.installation:
                return self._error(403, "Resource not accessible by integration")
            return self._send(200, {"login": token.login, "id": 1, "type": "User"})
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if not m or m.group(1) != repo:
            return self._error(404, "Not Found")
        rest = m.group(2) or ""
        if rest == "" and method == "GET":
            return self._send(200, {"id": 1, "full_name": repo, "name": repo.split("/")[1],
                                    "owner": {"login": repo.split("/")[0]},
                                    "url": f"{self.base}/repos/{repo}"})
        if rest.startswith("/git/"):
            return self._git(method, rest[len("/git"):], token, parse_qs(url.query))
        if rest == "/check-runs" or rest.startswith("/check-runs/"):
            return self._checks(method, rest, token)
        if m2 := re.fullmatch(r"/pulls/(\d+)", rest):
            number = int(m2.group(1))
            if method != "GET" or number not in self.state.pulls:
                return self._error(404, "Not Found")
            return self._send(200, {"number": number, "state": "open",
                                    "url": f"{self.base}/repos/{repo}/pulls/{number}",
                                    "head": {"sha": self.state.pulls[number], "ref": "feature"},
                                    "base": {"ref": "main", "repo": {"full_name": repo}}})
        if m2 := re.fullmatch(r"/issues/(\d+)", rest):
            number = int(m2.group(1))
            if method != "GET" or number not in self.state.pulls:
                return self._error(404, "Not Found")
            return self._send(200, {"number": number, "state": "open",
                                    "url": f"{self.base}/repos/{repo}/issues/{number}",
                                    "pull_request": {"url": f"{self.base}/repos/{repo}/pulls/{number}"}})
        if m2 := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(m2.group(1))
            if number not in self.state.pulls:
                return self._error(404, "Not Found")
            if method == "GET":
                return self._list(number, parse_qs(url.query), path)
            if method == "POST":
                data, refused = self._writable_body(token)
                if refused:
                    return refused
                c = self.state.add_comment(number, data["body"], token.login)
                js = self._comment_json(c, number)
                return self._send(201, js, {"Location": js["url"]})
        if m2 := re.fullmatch(r"/issues/comments/(\d+)", rest):
            cid = int(m2.group(1))
            found = [(n, c) for n, cs in self.state.comments.items() for c in cs if c.id == cid]
            if not found:
                return self._error(404, "Not Found")
            number, c = found[0]
            if method == "GET":
                return self._send(200, self._comment_json(c, number))
            if method == "PATCH":
                # GitHub lets anyone with write access edit any comment: only the client's own
                # rule keeps it off other people's comments.
                data, refused = self._writable_body(token)
                if refused:
                    return refused
                c.body = data["body"]
                c.updated_at = "2026-01-02T00:00:00Z"
                return self._send(200, self._comment_json(c, number))
        return self._error(404, "Not Found")

    def _git(self, method: str, rest: str, token: Token, query: dict):
        st, repo = self.state, self.state.repository
        api = f"{self.base}/repos/{repo}/git"
        if st.git_empty:
            return self._error(409, "Git Repository is empty.")
        if method != "GET" and not (token.write and token.contents_write):
            return self._error(403, "Resource not accessible by integration")
        body = self._read_body() if method != "GET" else {}
        if body is None:
            return self._error(400, "Problems parsing JSON")

        def invalid(message):
            return self._error(422, message)

        if rest == "/blobs" and method == "POST":
            if body.get("encoding") not in ("base64", "utf-8", None) or \
                    not isinstance(body.get("content"), str):
                return invalid("Invalid request.")
            try:
                data = base64.b64decode(body["content"], validate=True) \
                    if body.get("encoding") == "base64" else body["content"].encode()
            except ValueError:
                return invalid("Invalid request.")
            sha = st.put_blob(data)
            return self._send(201, {"sha": sha, "url": f"{api}/blobs/{sha}"},
                              {"Location": f"{api}/blobs/{sha}"})
        if (m := re.fullmatch(r"/commits/([0-9a-f]{40})", rest)) and method == "GET":
            c = st.commits.get(m.group(1))
            if c is None:
                return self._error(404, "Not Found")
            return self._send(200, self._commit_json(m.group(1), c, api))
        if (m := re.fullmatch(r"/trees/([0-9a-f]{40})", rest)) and method == "GET":
            if m.group(1) not in st.trees:
                return self._error(404, "Not Found")
            if query.get("recursive"):
                items = [{"path": p, "mode": mode, "type": "blob", "sha": sha}
                         for p, (mode, sha) in sorted(st.flat(m.group(1)).items())]
            else:
                items = [{"path": n, "mode": mode, "type": kind, "sha": sha}
                         for n, (mode, kind, sha) in sorted(st.trees[m.group(1)].items())]
            return self._send(200, {"sha": m.group(1), "url": f"{api}/trees/{m.group(1)}",
                                    "tree": items,
                                    "truncated": st.trees_truncated})
        if rest == "/trees" and method == "POST":
            entries = body.get("tree")
            if not isinstance(entries, list):
                return invalid("Invalid tree info")
            base = body.get("base_tree")
            if base is not None and base not in st.trees:
                return invalid("Invalid tree info")    # GitHub: 422 on an unknown base_tree
            flat = st.flat(base) if base else {}
            for e in entries:
                if not isinstance(e, dict):
                    return invalid("Invalid tree info")
                path, sha, kind, mode = e.get("path"), e.get("sha"), e.get("type"), e.get("mode")
                if not isinstance(path, str) or not path or path.startswith("/") or \
                        path.endswith("/") or {".", "..", ""} & set(path.split("/")) or \
                        (kind, mode) not in TREE_KINDS or ("content" in e and sha is not None):
                    return invalid("Invalid tree info")
                if sha is None and "content" not in e:
                    # "If the value is null then the file will be deleted" and "Returns an
                    # error if you try to delete a file that does not exist": a file, never a
                    # folder (GitHub answers 422 to a null sha on a folder's path too).
                    if kind != "blob" or path not in flat:
                        return invalid("GitRPC::BadObjectState")
                    del flat[path]
                    continue
                for p in [p for p in flat if p == path or p.startswith(path + "/")]:
                    del flat[p]             # an entry replaces whatever was at its path
                if kind == "tree":
                    if sha not in st.trees:
                        return invalid("Invalid tree info")
                    flat.update(st.flat(sha, path + "/"))
                elif kind == "blob":
                    if "content" in e:
                        sha = st.put_blob(str(e["content"]).encode())
                    elif sha not in st.blobs:
                        return invalid("Invalid tree info")
                    flat[path] = (mode, sha)
                else:                       # submodules: not kept by this object store
                    return invalid("Invalid tree info")
            sha = st.build(flat)
            return self._send(201, {"sha": sha, "url": f"{api}/trees/{sha}", "truncated": False,
                                    "tree": [{"path": n, "mode": mo, "type": k, "sha": s}
                                             for n, (mo, k, s) in sorted(st.trees[sha].items())]})
        if rest == "/commits" and method == "POST":
            parents = body.get("parents", [])
            if body.get("tree") not in st.trees or not isinstance(body.get("message"), str) \
                    or not isinstance(parents, list) or any(p not in st.commits for p in parents):
                return invalid("Invalid request.")
            sha = st.put_commit(body["tree"], parents, body["message"])
            return self._send(201, self._commit_json(sha, st.commits[sha], api),
                              {"Location": f"{api}/commits/{sha}"})
        if (m := re.fullmatch(r"/ref/(.+)", rest)) and method == "GET":
            ref = "refs/" + m.group(1)
            if ref not in st.refs:
                return self._error(404, "Not Found")
            return self._send(200, self._ref_json(ref, api))
        if rest == "/refs" and method == "POST":
            ref, sha = body.get("ref"), body.get("sha")
            if not isinstance(ref, str) or not ref.startswith("refs/") or ref.count("/") < 2:
                return invalid("Reference name must start with 'refs/' and have at least two "
                               "slashes.")
            self._run_hooks()
            if ref in st.refs:
                return invalid("Reference already exists")
            if sha not in st.commits:
                return invalid("Object does not exist")
            st.refs[ref] = sha
            return self._send(201, self._ref_json(ref, api), {"Location": f"{api}/{ref}"})
        if (m := re.fullmatch(r"/refs/(.+)", rest)) and method == "PATCH":
            ref, sha = "refs/" + m.group(1), body.get("sha")
            self._run_hooks()
            if ref not in st.refs:
                return invalid("Reference does not exist")
            if sha not in st.commits:
                return invalid("Object does not exist")
            if not body.get("force") and st.refs[ref] not in st.ancestors(sha):
                return invalid("Update is not a fast forward")
            st.refs[ref] = sha
            return self._send(200, self._ref_json(ref, api))
        return self._error(404, "Not Found")

    def _checks(self, method: str, rest: str, token: Token):
        st, repo = self.state, self.state.repository
        if (m := re.fullmatch(r"/check-runs/(\d+)", rest)) and method == "GET":
            found = [r for r in st.check_runs if r["id"] == int(m.group(1))]
            return self._send(200, found[0]) if found else self._error(404, "Not Found")
        if rest != "/check-runs" or method != "POST":
            return self._error(404, "Not Found")
        docs = "https://docs.github.com/rest/checks/runs#create-a-check-run"
        if not token.installation:
            return self._send(403, {"message": "You must authenticate via a GitHub App.",
                                    "documentation_url": docs, "status": "403"})
        if not (token.write and token.checks_write):
            return self._send(403, {"message": "Resource not accessible by integration",
                                    "documentation_url": docs, "status": "403"})
        body = self._read_body()
        if body is None:
            return self._error(400, "Problems parsing JSON")

        def invalid(message):
            return self._send(422, {"message": f"Invalid request.\n\n{message}",
                                    "documentation_url": docs, "status": "422"})

        for key in ("name", "head_sha"):
            if not isinstance(body.get(key), str) or not body[key]:
                return invalid(f"\"{key}\" wasn't supplied.")
        status = body.get("status", "queued")
        if status not in ("queued", "in_progress", "completed", "waiting", "requested",
                          "pending"):
            return invalid(f"{status!r} is not a member of the status enum.")
        conclusions = ("action_required", "cancelled", "failure", "neutral", "success",
                       "skipped", "stale", "timed_out")
        if status == "completed" and body.get("conclusion") not in conclusions:
            return invalid("\"conclusion\" wasn't supplied.")
        output = body.get("output")
        if output is not None:
            if not isinstance(output, dict):
                return invalid("For 'properties/output', it is not an object.")
            for key in ("title", "summary"):
                if not isinstance(output.get(key), str):
                    return invalid(f"\"{key}\" wasn't supplied.")
            for key in ("summary", "text"):
                value = output.get(key)
                if isinstance(value, str) and len(value) > 65535:
                    return invalid(f"Only 65535 characters are allowed; {len(value)} were "
                                   "supplied.")
        if body["head_sha"] not in set(st.pulls.values()) | st.commit_shas:
            return self._send(422, {"message": f"No commit found for SHA: {body['head_sha']}",
                                    "documentation_url": docs, "status": "422"})
        st.next_id += 1
        run_id = st.next_id
        out = output or {}
        run = {"id": run_id, "node_id": f"CR_{run_id}", "head_sha": body["head_sha"],
               "external_id": body.get("external_id", ""), "name": body["name"],
               "url": f"{self.base}/repos/{repo}/check-runs/{run_id}",
               "html_url": f"https://github.com/{repo}/runs/{run_id}",
               "details_url": body.get("details_url"), "status": status,
               "conclusion": body.get("conclusion") if status == "completed" else None,
               "started_at": "2026-01-01T00:00:00Z",
               "completed_at": "2026-01-01T00:00:00Z" if status == "completed" else None,
               "output": {"title": out.get("title"), "summary": out.get("summary"),
                          "text": out.get("text"), "annotations_count": 0,
                          "annotations_url": f"{self.base}/repos/{repo}/check-runs/{run_id}"
                                             "/annotations"},
               "check_suite": {"id": 1}, "pull_requests": [],
               "app": {"slug": "github-actions", "name": "GitHub Actions"}}
        st.check_runs.append(run)
        return self._send(201, run, {"Location": run["url"]})

    def _run_hooks(self):
        hooks, self.state.before_ref_write[:] = list(self.state.before_ref_write), []
        for hook in hooks:
            hook(self.state)

    def _ref_json(self, ref: str, api: str) -> dict:
        sha = self.state.refs[ref]
        return {"ref": ref, "node_id": "REF_" + sha[:8], "url": f"{api}/{ref}",
                "object": {"type": "commit", "sha": sha, "url": f"{api}/commits/{sha}"}}

    @staticmethod
    def _commit_json(sha: str, c: dict, api: str) -> dict:
        return {"sha": sha, "node_id": "C_" + sha[:8], "url": f"{api}/commits/{sha}",
                "message": c["message"],
                "tree": {"sha": c["tree"], "url": f"{api}/trees/{c['tree']}"},
                "parents": [{"sha": p, "url": f"{api}/commits/{p}"} for p in c["parents"]],
                "author": {"name": "fake", "email": "fake@example.invalid",
                           "date": "2026-01-01T00:00:00Z"},
                "verification": {"verified": False, "reason": "unsigned"}}

    def _writable_body(self, token):
        """(the request's JSON body, None), or (None, the error GitHub answers with)."""
        if not token.write:
            return None, self._error(403, "Resource not accessible by integration")
        data = self._read_body()
        return data, self._validate_body(data)

    def _validate_body(self, data):
        if data is None or not isinstance(data.get("body"), str):
            return self._error(400, "Problems parsing JSON")
        if len(data["body"]) > BODY_LIMIT:
            return self._error(422, "Validation Failed", errors=[{
                "resource": "IssueComment", "code": "custom", "field": "body",
                "message": f"body is too long (maximum is {BODY_LIMIT} characters)"}])
        return None

    def _list(self, number: int, query: dict, path: str):
        try:
            per_page = min(100, max(1, int(query.get("per_page", ["30"])[0])))
            page = max(1, int(query.get("page", ["1"])[0]))
        except ValueError:
            return self._error(422, "Validation Failed")
        items = self.state.comments.get(number, [])
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []

        def link(p, rel):
            links.append(f'<{self.base}{path}?per_page={per_page}&page={p}>; rel="{rel}"')

        if page > 1:
            link(page - 1, "prev")
        if page < last:
            link(page + 1, "next")
            link(last, "last")
        if page > 1:
            link(1, "first")
        headers = {"Link": ", ".join(links)} if links else {}
        return self._send(200, [self._comment_json(c, number) for c in chunk], headers)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PATCH(self):
        self._route("PATCH")


class FakeGitHub:
    def __init__(self, state: State | None = None):
        self.state = state or State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
