"""Which pull request a run concerns, from real-shaped event payloads."""

import json

import pytest

from action import event
from sdopt.errors import SdoptError

SHA = "c" * 40


def pr_payload(head_repo="octo/widgets"):
    return {"action": "synchronize", "number": 7,
            "pull_request": {"number": 7, "head": {"sha": SHA, "repo": {"full_name": head_repo}},
                             "base": {"repo": {"full_name": "octo/widgets"}}},
            "repository": {"full_name": "octo/widgets"}}


def env_for(tmp_path, payload, name):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return {"GITHUB_EVENT_PATH": str(path), "GITHUB_EVENT_NAME": name,
            "GITHUB_REPOSITORY": "octo/widgets"}


def test_same_repo_pull_request(tmp_path):
    ctx = event.from_event(env_for(tmp_path, pr_payload(), "pull_request"))
    assert (ctx.repository, ctx.number, ctx.head_sha, ctx.is_fork) == ("octo/widgets", 7, SHA, False)


def test_fork_pull_request(tmp_path):
    ctx = event.from_event(env_for(tmp_path, pr_payload("mallory/widgets"), "pull_request"))
    assert ctx.is_fork and ctx.number == 7


def test_push_has_no_pull_request(tmp_path):
    ctx = event.from_event({**env_for(tmp_path, {"ref": "refs/heads/main"}, "push"),
                            "GITHUB_SHA": SHA})
    assert ctx.number is None and ctx.head_sha == SHA


def test_unreadable_payload_is_a_clear_error(tmp_path):
    (tmp_path / "event.json").write_text("{not json")
    with pytest.raises(SdoptError, match="GITHUB_EVENT_PATH"):
        event.from_event({"GITHUB_EVENT_PATH": str(tmp_path / "event.json")})


def commenter_env(tmp_path, head_sha=SHA, prs=()):
    payload = {"workflow_run": {"head_sha": head_sha, "event": "pull_request",
                                "pull_requests": [{"number": n} for n in prs]},
               "repository": {"full_name": "octo/widgets"}}
    return env_for(tmp_path, payload, "workflow_run")


def test_commenter_trusts_context_only_for_the_triggering_sha(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    ctx = event.from_event(env_for(tmp_path, pr_payload("mallory/widgets"), "pull_request"))
    event.save_context(ctx, art)
    got = event.context_for_comment(art, commenter_env(tmp_path))
    assert (got.number, got.head_sha, got.repository) == (7, SHA, "octo/widgets")
    with pytest.raises(SdoptError, match="refusing"):
        event.context_for_comment(art, commenter_env(tmp_path, head_sha="d" * 40))
    with pytest.raises(SdoptError, match="not among"):
        event.context_for_comment(art, commenter_env(tmp_path, prs=(8,)))


def test_commenter_rejects_a_forged_number(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    (art / event.CONTEXT_FILE).write_text(json.dumps({"number": "7; rm", "head_sha": SHA}))
    with pytest.raises(SdoptError, match="'number'"):
        event.context_for_comment(art, commenter_env(tmp_path))
    with pytest.raises(SdoptError, match="missing"):
        event.context_for_comment(tmp_path / "nowhere", commenter_env(tmp_path))
