"""The check run (action/checks.py) against the local GitHub stand-in (tests/fake_github.py):
created with the verdict and the summary table where the token may, cut to the Checks API's
limit, escaped; where it may not (a fork's read-only token, no ``checks: write``, a personal
token), one line says why and the verdict goes to the annotations and the job summary."""

import json

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import checks, event, main as entry  # noqa: E402
from action.comment import ACTIONS_BOT  # noqa: E402
from action.inputs import ActionInputs, read_inputs  # noqa: E402
from tests.action.test_action_main import (SHA, pr_env, results_doc, runner_env,  # noqa: E402
                                           verdict_doc)
from tests.action.test_action_workflow import parse_github_output  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402

REPO = "octo/widgets"
NOCHECKS = "ghs_0nochecks0secret"    # an installation token without checks: write
HOSTILE = "<script>@team |x| [link](http://evil) #12 `code`"


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token(ACTIONS_BOT), "ro": Token(ACTIONS_BOT, write=False),
                          NOCHECKS: Token(ACTIONS_BOT, checks_write=False),
                          "pat": Token("alice", installation=False)})
    with FakeGitHub(state) as server:
        yield server


def create(gh, token="rw", head_sha=SHA, **kw):
    args = dict(name="sdopt", conclusion="success", title="t", summary="s", text="x")
    args.update(kw)
    return checks.create_check_run(token=token, repository=REPO, head_sha=head_sha,
                                   api_url=gh.url, **args)


def check_posts(gh):
    return [p for m, p in gh.state.requests if m == "POST" and p.endswith("/check-runs")]


def test_a_completed_check_run_is_created_on_the_commit(gh):
    result = create(gh, details_url="https://github.com/octo/widgets/actions/runs/1")
    assert result.created and result.url == f"https://github.com/{REPO}/runs/" \
        f"{gh.state.check_runs[0]['id']}"
    (run,) = gh.state.check_runs
    assert (run["name"], run["head_sha"], run["status"], run["conclusion"]) == \
        ("sdopt", SHA, "completed", "success")
    assert run["output"]["title"] == "t" and run["output"]["summary"] == "s"
    assert run["details_url"] == "https://github.com/octo/widgets/actions/runs/1"


@pytest.mark.parametrize("token, status, words", [
    ("ro", 403, "Resource not accessible by integration"),
    (NOCHECKS, 403, "Resource not accessible by integration"),
    ("pat", 403, "You must authenticate via a GitHub App."),
    ("nope", 401, "Bad credentials"),
])
def test_refusals_come_back_with_why(gh, token, status, words):
    result = create(gh, token=token)
    assert not result.created and gh.state.check_runs == []
    assert f"GitHub API answered {status}: {words}" in result.reason
    assert "\n" not in result.reason and NOCHECKS not in result.reason
    if token in ("ro", NOCHECKS):
        assert "checks: write" in result.reason and "fork" in result.reason
    if token == "pat":
        assert "GitHub App" in result.reason and "personal access token" in result.reason


def test_an_unknown_commit_is_refused_by_the_api_and_a_non_sha_before_it(gh):
    result = create(gh, head_sha="f" * 40)
    assert not result.created and "422" in result.reason and "No commit found" in result.reason
    assert not create(gh, head_sha="main").created
    assert len(check_posts(gh)) == 1


@pytest.mark.parametrize("state, fail_on, trusted, expected", [
    ("pass", ("regression", "not_comparable"), True, "success"),
    ("pass", ("regression", "not_comparable"), False, "neutral"),   # a fork's own artifact
    ("regression", ("regression", "not_comparable"), True, "failure"),
    ("regression", ("regression", "not_comparable"), False, "failure"),
    ("regression", (), True, "neutral"),
    ("not_comparable", ("regression", "not_comparable"), True, "failure"),
    ("not_comparable", ("regression",), True, "neutral"),
    ("none", ("regression", "not_comparable"), True, "neutral"),
])
def test_conclusion_follows_the_verdict_and_fail_on(state, fail_on, trusted, expected):
    assert checks.conclusion(state, fail_on, trusted=trusted) == expected


def test_summary_is_cut_to_the_api_limit_and_accepted(gh):
    """A report far over 65,535 characters (astral characters count twice in UTF-16) is cut at
    a line end with a note linking the artifact, and GitHub's limit then accepts it."""
    report = "| a | b |\n" + "".join(f"| row {i} | 😀 {'x' * 60} |\n" for i in range(2000))
    url = "https://github.com/octo/widgets/actions/runs/1/artifacts/2"
    summary = checks.summary("regression", ["slower"], report, artifact_url=url)
    assert len(summary.encode("utf-16-le")) // 2 <= checks.OUTPUT_LIMIT
    assert "65,535-character limit" in summary and url in summary
    body = summary[:summary.index("\n\n> [!NOTE]")]
    assert body.endswith("|")                      # no table row cut in half
    text = checks.cut("y" * 100_000)
    assert len(text) <= checks.OUTPUT_LIMIT
    assert create(gh, summary=summary, text=text).created
    assert gh.state.check_runs[0]["output"]["summary"] == summary
    # the fake holds GitHub's limit: one character more is refused
    refused = create(gh, summary="z" * (checks.OUTPUT_LIMIT + 1))
    assert not refused.created and "422" in refused.reason


def test_untrusted_text_is_escaped_and_the_title_is_one_line():
    summary = checks.summary("regression", [HOSTILE], "report")
    assert "<script>" not in summary and "@team" not in summary
    assert "[link](http" not in summary and "|x|" not in summary
    details = checks.details(config=f"cfg/{HOSTILE}.toml", key="default", run_url=None,
                             artifact_url="javascript:alert(1)", head_sha=SHA)
    assert "<script>" not in details and "@team" not in details
    assert "javascript:" not in details
    title = checks.title("regression", 2.0, [f"line one\nline two {'w' * 400}"])
    assert "\n" not in title and len(title) <= checks.TITLE_LIMIT
    assert title.startswith("sdopt: regression, optimized 2.00x")
    assert checks.check_name() == "sdopt" and checks.check_name("l4") == "sdopt (l4)"


def write_out(tmp_path, state="regression", reasons=("latency 1.50x the baseline's",)):
    out = tmp_path / "sdopt-out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc(prompt=HOSTILE)))
    (out / "verdict.json").write_text(json.dumps(verdict_doc(state, reasons)))
    (out / "report.md").write_text("| variant | median |\n|---|---|\n| optimized | 0.1 s |\n")
    return out


def test_publish_phase_creates_the_check_on_the_pull_requests_head(tmp_path, gh, capsys):
    out = write_out(tmp_path)
    url = "https://github.com/octo/widgets/actions/runs/1/artifacts/2"
    env = {**pr_env(tmp_path, gh, out=out, comment_key="l4"), "SDOPT_PHASE": "publish",
           "INPUT_ARTIFACT_URL": url, "GITHUB_RUN_ID": "1"}
    assert entry.main(env=env) == 0
    (run,) = gh.state.check_runs
    assert (run["name"], run["head_sha"], run["conclusion"]) == ("sdopt (l4)", SHA, "failure")
    assert run["output"]["title"].startswith("sdopt: regression, optimized 2.00x")
    summary = run["output"]["summary"]
    assert summary.startswith("**Verdict: REGRESSION**")
    assert "| optimized | 0.1 s |" in summary and f"[Download the results]({url})" in summary
    assert run["details_url"] == url and url in run["output"]["text"]
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["check_url"] == run["html_url"]
    assert not (tmp_path / "summary.md").exists()     # the run step wrote the summary
    out_text = capsys.readouterr().out
    assert "check run created" in out_text and "::notice" not in out_text


def test_a_token_without_checks_write_degrades_to_annotations(tmp_path, gh, capsys):
    out = write_out(tmp_path, "pass", ())
    env = {**pr_env(tmp_path, gh, out=out, token=NOCHECKS), "SDOPT_PHASE": "publish"}
    assert entry.main(env=env) == 0
    assert gh.state.check_runs == [] and len(check_posts(gh)) == 1
    lines = capsys.readouterr().out.splitlines()
    why = [x for x in lines if x.startswith("no check run:")]
    assert len(why) == 1 and "403: Resource not accessible by integration" in why[0]
    assert "checks: write" in why[0]
    notices = [x for x in lines if x.startswith("::notice")]
    assert notices == ["::notice title=sdopt%3A pass::verdict: pass; the report is in the job "
                       "summary"]
    assert "no check run (GitHub API answered 403" in (tmp_path / "summary.md").read_text()
    assert parse_github_output((tmp_path / "output").read_text())["check_url"] == ""
    assert NOCHECKS not in "\n".join(lines).replace(f"::add-mask::{NOCHECKS}", "")
    assert 7 in gh.state.comments                 # the comment is independent of the check


def test_a_fork_pull_request_does_not_try(tmp_path, gh, capsys):
    ctx = event.PullRequestContext(REPO, 7, SHA, "mallory/widgets", "pull_request")
    env = runner_env(tmp_path, gh)
    url = entry.publish_check(ActionInputs(token="rw"), env, ctx, results_doc(),
                              verdict_doc("regression"), "report", annotated=True)
    assert url == "" and gh.state.requests == []
    out = capsys.readouterr().out
    assert "no check run: pull request from a fork" in out and "sdopt-comment.yml" in out
    assert "::" not in out            # the regression's errors were annotated by the run step


def test_check_run_false_makes_no_request(tmp_path, gh, capsys):
    out = write_out(tmp_path, "pass", ())
    env = {**pr_env(tmp_path, gh, out=out, check_run="false", comment="never"),
           "SDOPT_PHASE": "publish"}
    assert read_inputs(env).check_run is False
    assert entry.main(env=env) == 0
    assert gh.state.requests == [] and "::notice" not in capsys.readouterr().out
    with pytest.raises(Exception, match="input 'check_run' is 'maybe'"):
        read_inputs({"INPUT_CHECK_RUN": "maybe"})


def test_a_push_gets_its_check_on_the_pushed_commit(tmp_path, gh):
    pushed = "c" * 40
    gh.state.commit_shas.add(pushed)
    ctx = event.PullRequestContext(REPO, None, pushed, None, "push")
    url = entry.publish_check(ActionInputs(token="rw"), runner_env(tmp_path, gh), ctx,
                              results_doc(), verdict_doc("pass", ()), "report", annotated=True)
    (run,) = gh.state.check_runs
    assert url == run["html_url"] and run["head_sha"] == pushed and run["conclusion"] == "success"


def comment_env(tmp_path, gh, artifact, head_repository, token="rw"):
    env = runner_env(tmp_path, gh, token=token, mode="comment", artifact_dir=artifact)
    payload = {"workflow_run": {"head_sha": SHA, "event": "pull_request", "pull_requests": [],
                                "head_repository": {"full_name": head_repository}},
               "repository": {"full_name": REPO}}
    (tmp_path / "event.json").write_text(json.dumps(payload))
    return env


@pytest.mark.parametrize("state, expected", [("pass", "neutral"), ("regression", "failure")])
def test_the_commenter_makes_a_forks_check_never_green(tmp_path, gh, artifact, state, expected):
    """mode comment (workflow_run) creates the check a fork's run could not; the fork wrote the
    artifact, so its pass is neutral, and its text is escaped."""
    (artifact / "verdict.json").write_text(json.dumps(verdict_doc(state, (HOSTILE,))))
    assert entry.main(env=comment_env(tmp_path, gh, artifact, "mallory/widgets")) == 0
    (run,) = gh.state.check_runs
    assert run["head_sha"] == SHA and run["conclusion"] == expected
    assert "pull request's own run" in run["output"]["title"]
    summary = run["output"]["summary"]
    assert "<script>" not in summary and "@team" not in summary
    assert "FORGED" not in summary                 # re-rendered from the JSON, as the comment


def test_the_commenter_leaves_a_same_repository_pr_to_its_gate_job(tmp_path, gh, artifact,
                                                                    capsys):
    assert entry.main(env=comment_env(tmp_path, gh, artifact, REPO)) == 0
    assert gh.state.check_runs == [] and check_posts(gh) == []
    assert "gate job made the check run itself" in capsys.readouterr().out


def test_the_commenter_without_checks_write_annotates_the_verdict(tmp_path, gh, artifact,
                                                                  capsys):
    """In mode comment nothing annotated the verdict before: the fallback does."""
    env = comment_env(tmp_path, gh, artifact, "mallory/widgets", token=NOCHECKS)
    assert entry.main(env=env) == 0
    out = capsys.readouterr().out
    errors = [x for x in out.splitlines() if x.startswith("::error")]
    assert errors == ["::error title=sdopt%3A performance regression::latency 1.50x the "
                      "baseline's (tolerance 1.10x)"]
    assert "no check run: GitHub API answered 403" in out
    assert NOCHECKS not in out.replace(f"::add-mask::{NOCHECKS}", "")


@pytest.fixture
def artifact(tmp_path):
    """A fork's gate artifact, as test_action_main's (its report.md forged)."""
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "results.json").write_text(json.dumps(results_doc(prompt=HOSTILE)))
    (art / "verdict.json").write_text(json.dumps(verdict_doc()))
    (art / "report.md").write_text("FORGED by the fork: @everyone")
    (art / event.CONTEXT_FILE).write_text(json.dumps(
        {"repository": REPO, "number": 7, "head_sha": SHA,
         "head_repository": "mallory/widgets", "event_name": "pull_request"}))
    return art


def test_an_unreachable_api_is_a_reason_not_a_failure():
    result = checks.create_check_run(token="rw", repository=REPO, head_sha=SHA, name="sdopt",
                                     conclusion="success", title="t", summary="s", text="x",
                                     api_url="http://127.0.0.1:9")     # nothing listens there
    assert not result.created and "could not be reached" in result.reason
