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
