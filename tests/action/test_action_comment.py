"""PR comment upsert against the local GitHub REST stand-in (tests/fake_github.py)."""

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action.comment import (ACTIONS_BOT, cap_body, decide, marker, upsert_comment,  # noqa: E402
                            verdict_marker)
from sdopt.report.markdown import MAX_CHARS  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402

REPO, PR = "octo/widgets", 7


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token(ACTIONS_BOT), "ro": Token(ACTIONS_BOT, write=False),
                          "pat": Token("alice", installation=False)})
    with FakeGitHub(state) as server:
        yield server


def upsert(gh, body, token="rw", **kw):
    return upsert_comment(token=token, repository=REPO, number=PR, body=body, api_url=gh.url, **kw)


def test_first_run_creates_then_second_run_updates(gh):
    first = upsert(gh, "report v1")
    assert first.action == "created"
    assert first.url.endswith(f"#issuecomment-{gh.state.comments[PR][0].id}")
    second = upsert(gh, "report v2")
    assert second.action == "updated" and second.url == first.url
    comments = gh.state.comments[PR]
    assert len(comments) == 1
    assert comments[0].body == f"{marker()}\n{verdict_marker('none')}\nreport v2"
    assert ("PATCH", f"/repos/{REPO}/issues/comments/{comments[0].id}") in gh.state.requests


def test_other_authors_comment_with_marker_is_left_alone(gh):
    forged = gh.state.add_comment(PR, f"{marker()}\nI pasted your marker", "mallory")
    result = upsert(gh, "report")
    assert result.action == "created"
    assert forged.body == f"{marker()}\nI pasted your marker"
    assert [c.login for c in gh.state.comments[PR]] == ["mallory", ACTIONS_BOT]
    assert not any(m == "PATCH" for m, _ in gh.state.requests)


def test_personal_token_identity_comes_from_get_user(gh):
    bot = gh.state.add_comment(PR, f"{marker()}\nold bot comment", ACTIONS_BOT)
    result = upsert(gh, "from alice", token="pat")
    assert result.action == "created"          # the bot's comment is not alice's
    assert bot.body.endswith("old bot comment")
    assert upsert(gh, "again", token="pat").action == "updated"
    assert len(gh.state.comments[PR]) == 2


def test_finds_our_comment_on_a_later_page(gh):
    for i in range(250):
        gh.state.add_comment(PR, f"chatter {i}", f"user{i % 5}")
    ours = gh.state.add_comment(PR, f"{marker()}\nold", ACTIONS_BOT)
    result = upsert(gh, "new")
    assert result.action == "updated"
    assert ours.body == f"{marker()}\n{verdict_marker('none')}\nnew"
    pages = [p for m, p in gh.state.requests if p.endswith(f"/issues/{PR}/comments") and m == "GET"]
    assert len(pages) == 3                     # 100 per page: pages 1, 2, 3 followed via Link


def test_marker_key_separates_comments(gh):
    upsert(gh, "gpu a", key="a100")
    upsert(gh, "gpu b", key="l4")
    upsert(gh, "gpu a again", key="a100")
    bodies = sorted(c.body for c in gh.state.comments[PR])
    none = verdict_marker("none")
    assert bodies == [f"{marker('a100')}\n{none}\ngpu a again", f"{marker('l4')}\n{none}\ngpu b"]


def test_read_only_token_is_skipped_with_reason(gh):
    result = upsert(gh, "report", token="ro")
    assert result.action == "skipped"
    assert "403" in result.reason and "fork" in result.reason
    assert PR not in gh.state.comments


def test_bad_token_and_unknown_pr_are_skipped(gh):
    bad = upsert(gh, "x", token="nope")
    assert bad.action == "skipped" and "401" in bad.reason
    missing = upsert_comment(token="rw", repository=REPO, number=99, body="x", api_url=gh.url)
    assert missing.action == "skipped" and "404" in missing.reason


def test_long_body_is_capped_and_accepted(gh):
    body = "| row |\n" * 20000               # 160,000 characters
    result = upsert(gh, body, artifact_url="https://example.test/run/1")
    assert result.action == "created"
    posted = gh.state.comments[PR][0].body
    assert MAX_CHARS - 200 < len(posted) <= MAX_CHARS
    assert posted.startswith(marker()) and "shortened to fit GitHub's 65,536-character" in posted
    assert "https://example.test/run/1" in posted
    assert "| row |\n\n> [!NOTE]" in posted          # cut at a line end, not inside a row


def test_head_sha_mismatch_refuses(gh):
    result = upsert(gh, "x", expected_head_sha="b" * 40)
    assert result.action == "skipped" and "another commit" in result.reason
    assert PR not in gh.state.comments
    assert upsert(gh, "x", expected_head_sha="a" * 40).action == "created"


def test_cap_body_keeps_short_bodies_and_marker():
    assert cap_body("hi") == f"{marker()}\nhi"
    assert cap_body(f"{marker()}\nhi") == f"{marker()}\nhi"
    capped = cap_body("é" * 70000, limit=1000)       # one enormous line: cut inside it
    assert len(capped) == 1000 and capped.startswith(marker() + "\néé")


@pytest.mark.parametrize("policy,state,existing,has,writes", [
    ("always", "pass", "pass", True, True),
    ("never", "regression", None, False, False),
    ("on-change", "pass", None, False, True),            # no comment yet: the first one
    ("on-change", "pass", "pass", True, False),          # same verdict: left alone
    ("on-change", "regression", "pass", True, True),
    ("on-change", "pass", None, True, True),             # an older comment without the marker
    ("on-regression", "pass", None, False, False),       # a pass never starts a comment
    ("on-regression", "regression", None, False, True),
    ("on-regression", "not_comparable", "pass", True, True),
    ("on-regression", "regression", "regression", True, True),   # numbers refreshed
    ("on-regression", "pass", "regression", True, True),  # turns back to pass: no stale red
    ("on-regression", "pass", "pass", True, False),
])
def test_comment_policy(policy, state, existing, has, writes):
    assert (decide(policy, state, existing, has) is None) == writes


def test_on_regression_turns_a_red_comment_green_then_leaves_it(gh):
    assert upsert(gh, "all fine", policy="on-regression", verdict="pass").action == "kept"
    assert PR not in gh.state.comments or not gh.state.comments[PR]
    assert upsert(gh, "slower", policy="on-regression", verdict="regression").action == "created"
    again = upsert(gh, "fine again", policy="on-regression", verdict="pass")
    assert again.action == "updated"
    assert gh.state.comments[PR][0].body.endswith("fine again")
    assert verdict_marker("pass") in gh.state.comments[PR][0].body
    kept = upsert(gh, "still fine", policy="on-regression", verdict="pass")
    assert kept.action == "kept" and kept.url == again.url
    assert gh.state.comments[PR][0].body.endswith("fine again")


def test_on_change_updates_only_when_the_verdict_changes(gh):
    assert upsert(gh, "v1", policy="on-change", verdict="pass").action == "created"
    assert upsert(gh, "v2", policy="on-change", verdict="pass").action == "kept"
    assert upsert(gh, "v3", policy="on-change", verdict="regression").action == "updated"
    assert gh.state.comments[PR][0].body.endswith("v3")


def test_a_body_function_is_called_only_when_the_comment_is_written(gh):
    """The action makes the comment's body (publishing its images) only once the head check and
    the policy say the comment will be written (a token GitHub then refuses is known only when
    the comment is written; a fork's pull_request run never gets this far)."""
    calls = []

    def body(text):
        return lambda: calls.append(text) or text

    assert upsert(gh, body("pass"), policy="on-regression", verdict="pass").action == "kept"
    assert upsert(gh, body("moved"), expected_head_sha="0" * 40).action == "skipped"
    assert calls == []
    assert upsert(gh, body("slower"), policy="on-change", verdict="regression").action == \
        "created"
    assert upsert(gh, body("still"), policy="on-change", verdict="regression").action == "kept"
    assert calls == ["slower"] and gh.state.comments[PR][0].body.endswith("slower")
