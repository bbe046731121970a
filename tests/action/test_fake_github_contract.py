"""The fake GitHub answers errors as GitHub does and, like GitHub, changes nothing when it
refuses a request: an over-long comment (422), a read-only token (403) and a body that is not
JSON (400) leave the pull request's comments as they were."""

import json
import urllib.error
import urllib.request

import pytest

from tests.fake_github import BODY_LIMIT, FakeGitHub, State, Token


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token("bot"), "ro": Token("bot", write=False)})
    with FakeGitHub(state) as server:
        yield server


def _post(gh, token, data: bytes):
    req = urllib.request.Request(f"{gh.url}/repos/octo/widgets/issues/7/comments", data=data,
                                 method="POST", headers={"Authorization": f"token {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("token, data, status", [
    ("rw", json.dumps({"body": "x" * (BODY_LIMIT + 1)}).encode(), 422),
    ("ro", json.dumps({"body": "hello"}).encode(), 403),
    ("rw", b"not json", 400),
    ("rw", json.dumps({"text": "no body"}).encode(), 400),
])
def test_a_refused_comment_changes_nothing(gh, token, data, status):
    got, body = _post(gh, token, data)
    assert got == status and body["message"] and body["documentation_url"]
    assert gh.state.comments.get(7, []) == []
    assert _post(gh, "rw", json.dumps({"body": "hello"}).encode())[0] == 201
    assert [c.body for c in gh.state.comments[7]] == ["hello"]


def _git(gh, method: str, path: str, body: dict, token: str = "rw"):
    req = urllib.request.Request(f"{gh.url}/repos/octo/widgets/git{path}",
                                 data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _tree(gh, body: dict):
    return _git(gh, "POST", "/trees", body)


def test_ref_conflicts_are_githubs_and_change_nothing(gh):
    """The branch ref's documented refusals (docs.github.com/rest/git/refs), each with GitHub's
    error body and the ref left as it was: 422 "Reference already exists" (two jobs creating
    the branch), 422 "Update is not a fast forward" (another job moved it), 409 "Git Repository
    is empty.", 403 for a token without contents: write."""
    st = gh.state
    blob = st.put_blob(b"x")
    first = st.put_commit(st.build({"a": ("100644", blob)}), [], "first")
    st.refs["refs/heads/sdopt-assets"] = first
    unrelated = st.put_commit(st.build({"b": ("100644", blob)}), [], "unrelated")
    child = st.put_commit(st.build({"c": ("100644", blob)}), [first], "child")
    cases = [
        ("POST", "/refs", {"ref": "refs/heads/sdopt-assets", "sha": child}, "rw", 422,
         "Reference already exists"),
        ("PATCH", "/refs/heads/sdopt-assets", {"sha": unrelated, "force": False}, "rw", 422,
         "Update is not a fast forward"),
        ("PATCH", "/refs/heads/sdopt-assets", {"sha": child}, "ro", 403,
         "Resource not accessible by integration"),
    ]
    for method, path, body, token, status, message in cases:
        got, answer = _git(gh, method, path, body, token)
        assert (got, answer["message"]) == (status, message) and answer["documentation_url"]
        assert st.refs["refs/heads/sdopt-assets"] == first
    assert _git(gh, "PATCH", "/refs/heads/sdopt-assets", {"sha": child})[0] == 200
    assert st.refs["refs/heads/sdopt-assets"] == child            # a fast forward is taken
    st.git_empty = True
    got, answer = _git(gh, "POST", "/blobs", {"content": "eA==", "encoding": "base64"})
    assert (got, answer["message"]) == (409, "Git Repository is empty.")


def test_a_null_sha_deletes_a_file_never_a_folder(gh):
    """POST /git/trees as documented (docs.github.com/rest/git/trees#create-a-tree): "If the
    value is null then the file will be deleted", and "Returns an error if you try to delete a
    file that does not exist"; a folder is not a file (GitHub answers 422 to that too)."""
    st = gh.state
    blob = st.put_blob(b"x")
    base = st.build({"run/a.webp": ("100644", blob), "run/b.webp": ("100644", blob),
                     "README.md": ("100644", blob)})
    status, _ = _tree(gh, {"base_tree": base, "tree": [
        {"path": "run", "mode": "040000", "type": "tree", "sha": None}]})
    assert status == 422
    status, _ = _tree(gh, {"base_tree": base, "tree": [
        {"path": "gone.md", "mode": "100644", "type": "blob", "sha": None}]})
    assert status == 422
    status, body = _tree(gh, {"base_tree": base, "tree": [
        {"path": "run/a.webp", "mode": "100644", "type": "blob", "sha": None}]})
    assert status == 201 and set(st.flat(body["sha"])) == {"run/b.webp", "README.md"}


def test_a_tree_entry_places_a_tree_and_no_base_tree_keeps_only_what_is_listed(gh):
    st = gh.state
    blob = st.put_blob(b"x")
    run = st.build({"a.webp": ("100644", blob)})
    status, body = _tree(gh, {"tree": [
        {"path": "old", "mode": "040000", "type": "tree", "sha": run},
        {"path": "new/b.webp", "mode": "100644", "type": "blob", "sha": blob}]})
    assert status == 201 and set(st.flat(body["sha"])) == {"old/a.webp", "new/b.webp"}
    for bad in ({"path": "x", "mode": "100644", "type": "tree", "sha": run},   # mode vs type
                {"path": "../x", "mode": "100644", "type": "blob", "sha": blob},
                {"path": "x", "mode": "040000", "type": "tree", "sha": "0" * 40}):
        assert _tree(gh, {"tree": [bad]})[0] == 422
