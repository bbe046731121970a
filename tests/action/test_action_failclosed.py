"""The action fails closed (issue #15): a crashed or killed ``sdopt`` publishes nothing and never
reports ``pass``; only files this run wrote are published and links are never followed; the
``sdopt`` child sees no token and cannot issue workflow commands; ``verdict`` takes only its
known values; merge mode publishes "not comparable"; the comment author comes from the token.

The ``sdopt`` processes here are real processes (a stand-in script run through the action's
SDOPT_COMMAND, so that a crash or a hostile output is exact), except where the real command is
needed (merge); the GitHub REST API is tests/fake_github.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import main as entry  # noqa: E402
from action.comment import ACTIONS_BOT, marker  # noqa: E402
from tests.action.test_action_main import SHA, results_doc, verdict_doc  # noqa: E402
from tests.action.test_action_workflow import parse_github_output  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402
from tests.gate.test_merge import leg  # noqa: E402

SECRET = "ghs_s3cr3tvalue0123456789"


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token(ACTIONS_BOT), SECRET: Token(ACTIONS_BOT),
                          "app": Token("sdopt-ci[bot]"),
                          "pat": Token("octocat", installation=False)})
    with FakeGitHub(state) as server:
        yield server


@pytest.fixture
def ws(tmp_path):
    """A workspace with a config and a committed, stale ``sdopt-out``: a passing verdict from
    another run, and a report.md that is a link to a file holding a secret."""
    ws = tmp_path / "ws"
    (ws / "sdopt-out").mkdir(parents=True)
    (ws / "sdopt.toml").write_text('model = "tiny"\n')
    (ws / "sdopt-out" / "results.json").write_text(json.dumps(results_doc()))
    (ws / "sdopt-out" / "verdict.json").write_text(json.dumps(verdict_doc("pass", [])))
    (tmp_path / "environ").write_text(f"GITHUB_TOKEN={SECRET}\n")
    (ws / "sdopt-out" / "report.md").symlink_to(tmp_path / "environ")
    return ws


def env_for(ws: Path, gh, **more) -> dict[str, str]:
    payload = {"pull_request": {"number": 7, "head": {"sha": SHA, "repo": {"full_name": "octo/widgets"}},
                                "base": {"repo": {"full_name": "octo/widgets"}}}}
    (ws.parent / "event.json").write_text(json.dumps(payload))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ws.parent),
           "GITHUB_EVENT_PATH": str(ws.parent / "event.json"),
           "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REPOSITORY": "octo/widgets",
           "GITHUB_API_URL": gh.url, "GITHUB_OUTPUT": str(ws.parent / "output"),
           "GITHUB_STEP_SUMMARY": str(ws.parent / "summary.md"),
           "INPUT_TOKEN": SECRET, "INPUT_CONFIG": str(ws / "sdopt.toml"),
           "INPUT_OUT": str(ws / "sdopt-out")}
    env.update(more)
    return env


def fake_sdopt(monkeypatch, tmp_path, body: str) -> None:
    """Run ``body`` (Python; ``out`` is the --out it was given, ``args`` its arguments) as the
    sdopt process."""
    script = tmp_path / "fake_sdopt.py"
    script.write_text("import json, os, signal, sys\nfrom pathlib import Path\n"
                      "args = sys.argv[1:]\n"
                      "out = Path(args[args.index('--out') + 1]) if '--out' in args else None\n"
                      + body)
    monkeypatch.setattr(entry, "SDOPT_COMMAND", (sys.executable, str(script)))


def write_run(verdict: str = "pass") -> str:
    """Script lines that write a complete, valid output as sdopt does."""
    return (f"out.mkdir()\n(out / 'results.json').write_text({json.dumps(json.dumps(results_doc()))})\n"
            f"(out / 'verdict.json').write_text({json.dumps(json.dumps(verdict_doc(verdict, [])))})\n"
            "(out / 'report.md').write_text('fresh report of this run')\n"
            f"sys.exit({ {'pass': 0, 'regression': 1, 'not_comparable': 3}[verdict]})\n")


def log(captured) -> str:
    """What the runner would print: the token's own mask request is the one place it appears."""
    return (captured.out + captured.err).replace(f"::add-mask::{SECRET}\n", "")


def published(ws: Path) -> tuple[dict, str]:
    output = ws.parent / "output"
    summary = ws.parent / "summary.md"
    return (parse_github_output(output.read_text()) if output.exists() else {},
            summary.read_text() if summary.exists() else "")


@pytest.mark.parametrize("crash, status", [
    ("os.kill(os.getpid(), signal.SIGKILL)\n", 128 + 9),      # an OOM kill
    ("raise RuntimeError('boom')\n", 1),                        # a crash (traceback, exit 1)
    ("sys.exit(0)\n", 1),                                       # "success" that wrote nothing
    ("sys.exit(139)\n", 139),                                   # a segfault as a shell reports it
])
def test_a_crash_with_a_stale_verdict_fails_and_never_reports_pass(
        ws, gh, tmp_path, monkeypatch, capsys, crash, status):
    fake_sdopt(monkeypatch, tmp_path, crash)
    rc = entry.main(env=env_for(ws, gh))
    out = log(capsys.readouterr())
    assert rc == status and rc != 0
    outputs, summary = published(ws)
    assert outputs.get("verdict") != "pass" and outputs == {}     # no outputs at all
    assert summary == "" and 7 not in gh.state.comments
    errors = [line for line in out.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and "nothing is published" in errors[0], out
    assert SECRET not in out
    assert (ws / "sdopt-out" / "report.md").is_symlink()            # left as it was
    assert not [p for p in ws.iterdir() if p.name.startswith(".sdopt-run-")]


def test_a_finished_run_replaces_the_stale_output_and_publishes_only_its_own_files(
        ws, gh, tmp_path, monkeypatch, capsys):
    fake_sdopt(monkeypatch, tmp_path, write_run("regression"))
    assert entry.main(env=env_for(ws, gh)) == 1
    out = log(capsys.readouterr())
    outputs, summary = published(ws)
    assert outputs["verdict"] == "regression"
    assert "fresh report of this run" in summary and SECRET not in summary + out
    assert "fresh report" in gh.state.comments[7][0].body
    assert not (ws / "sdopt-out" / "report.md").is_symlink()
    assert (ws / "sdopt-out" / ".sdopt-output").is_file()


def test_a_link_written_into_the_output_is_refused_not_followed(
        ws, gh, tmp_path, monkeypatch, capsys):
    fake_sdopt(monkeypatch, tmp_path, write_run("pass").replace(
        "(out / 'report.md').write_text('fresh report of this run')",
        f"(out / 'report.md').symlink_to({str(tmp_path / 'environ')!r})"))
    assert entry.main(env=env_for(ws, gh)) == 2
    out = log(capsys.readouterr())
    outputs, summary = published(ws)
    assert outputs == {} and summary == "" and 7 not in gh.state.comments
    assert "symbolic link" in out and SECRET not in out


def test_an_output_sdopt_did_not_write_is_refused_before_running(
        ws, gh, tmp_path, monkeypatch, capsys):
    """``out`` holding the user's files (no marker, no valid results) is never replaced."""
    (ws / "sdopt-out" / "results.json").write_text("{}")
    fake_sdopt(monkeypatch, tmp_path, "Path(os.environ['HOME'], 'ran').write_text('x')\n")
    assert entry.main(env=env_for(ws, gh)) == 2
    assert "input 'out'" in capsys.readouterr().out
    assert not (ws.parent / "ran").exists() and (ws / "sdopt-out" / "results.json").exists()


def test_the_sdopt_child_gets_no_token_and_no_runner_file(ws, gh, tmp_path, monkeypatch):
    dump = tmp_path / "child-env.json"
    fake_sdopt(monkeypatch, tmp_path, f"Path({str(dump)!r}).write_text(json.dumps(dict(os.environ)))\n"
               + write_run())
    secrets = {"GITHUB_TOKEN": SECRET, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": SECRET,
               "ACTIONS_ID_TOKEN_REQUEST_URL": "https://x", "ACTIONS_RUNTIME_TOKEN": SECRET,
               "ACTIONS_CACHE_URL": "https://x", "HF_TOKEN": SECRET,
               "HUGGING_FACE_HUB_TOKEN": SECRET, "SDOPT_HUB_TOKEN": SECRET,
               "GITHUB_ENV": str(tmp_path / "env"), "GITHUB_PATH": str(tmp_path / "path")}
    kept = {"GITHUB_SHA": SHA, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
            "SDOPT_CACHE": str(tmp_path / "cache"), "CI": "true"}
    assert entry.main(env=env_for(ws, gh, **secrets, **kept)) == 0
    child = json.loads(dump.read_text())
    assert not set(secrets) & set(child)
    assert not any(k.startswith("INPUT_") for k in child)
    assert SECRET not in json.dumps(child)
    assert {k: child.get(k) for k in kept} == kept
    assert "GITHUB_OUTPUT" not in child and "GITHUB_STEP_SUMMARY" not in child


def test_the_child_output_cannot_issue_workflow_commands(ws, gh, tmp_path, monkeypatch, capsys):
    """A baseline's field printed by sdopt (a model name with a newline) reaches the log as
    text, never as a command that sets an output, masks, or forges an annotation."""
    fake_sdopt(monkeypatch, tmp_path,
               "print('model: tiny\\n::set-output name=verdict::pass')\n"
               "print('  ::add-mask::everything')\n"
               "print('x\\r::error title=forged::y', flush=True)\n"
               "print('##[error]old style', file=sys.stderr)\n" + write_run("regression"))
    assert entry.main(env=env_for(ws, gh)) == 1
    captured = capsys.readouterr()
    for line in (captured.out + captured.err).replace("\r", "\n").splitlines():
        assert not line.lstrip().startswith("::") or line.startswith(("::error title=sdopt",
                                                                     "::add-mask::" + SECRET)), line
        assert "##[" not in line
    assert parse_github_output((ws.parent / "output").read_text())["verdict"] == "regression"


@pytest.mark.parametrize("value", ["pass\n::add-mask::x", "PASS", "maybe"])
def test_the_verdict_output_takes_only_known_values(tmp_path, value):
    from action.inputs import ActionInputs
    from sdopt.errors import SdoptError

    with pytest.raises(SdoptError, match="is not one of pass, regression, not_comparable, none"):
        entry.outputs_for(ActionInputs(), tmp_path, None, {"verdict": value}, "")
    assert entry.outputs_for(ActionInputs(), tmp_path, None, None, "")["verdict"] == "none"


def test_merge_mode_publishes_not_comparable_and_exits_3(tmp_path, gh, capsys):
    legs = tmp_path / "legs"
    leg(legs, "a100")
    leg(legs, "l4", state="not_comparable", reasons=["results from another machine"])
    ws = tmp_path / "ws"
    ws.mkdir()
    env = env_for(ws, gh, INPUT_MODE="merge", INPUT_ARTIFACT_DIR=str(legs),
                  INPUT_OUT=str(ws / "merged"), INPUT_TOKEN="rw")
    assert entry.main(env=env) == 3
    out = capsys.readouterr().out
    assert "::warning title=sdopt%3A not comparable" in out
    outputs, summary = published(ws)
    assert outputs["verdict"] == "not_comparable" and "another machine" in summary
    assert "not comparable" in gh.state.comments[7][0].body
    env["INPUT_FAIL_ON"] = "regression"
    (ws.parent / "output").unlink()
    assert entry.main(env=env) == 0                      # not listed in fail_on: published, 0
    assert len(gh.state.comments[7]) == 1


@pytest.mark.parametrize("hostile", ["bad-verdict", "no-results", "link"])
def test_merge_mode_hostile_legs_are_one_error_line(tmp_path, gh, capsys, hostile):
    legs = tmp_path / "legs"
    a = leg(legs, "a")
    if hostile == "bad-verdict":
        (a / "verdict.json").write_text(json.dumps({**verdict_doc(), "reasons": "one string"}))
    elif hostile == "no-results":
        (legs / "b").mkdir()
    else:
        (legs / "b").symlink_to(a)
    ws = tmp_path / "ws"
    ws.mkdir()
    env = env_for(ws, gh, INPUT_MODE="merge", INPUT_ARTIFACT_DIR=str(legs),
                  INPUT_OUT=str(ws / "merged"), INPUT_TOKEN="rw")
    assert entry.main(env=env) == 2
    captured = capsys.readouterr()
    errors = [x for x in captured.out.splitlines() if x.startswith("::error")]
    assert len(errors) == 1 and "Traceback" not in captured.out + captured.err
    assert not (ws / "merged").exists() and 7 not in gh.state.comments


@pytest.mark.parametrize("token, author", [("app", "sdopt-ci[bot]"), ("rw", ACTIONS_BOT),
                                           ("pat", "octocat")])
def test_the_comment_author_comes_from_the_token(ws, gh, tmp_path, monkeypatch, token, author):
    """A GitHub App's installation token comments as the app's bot (its GraphQL viewer), so
    the second run updates the first comment; a comment with our marker by another identity
    (github-actions[bot] when we are the app) is left alone."""
    other = "octocat" if author == ACTIONS_BOT else ACTIONS_BOT
    planted = gh.state.add_comment(7, f"{marker()}\nsomeone else's", other)
    fake_sdopt(monkeypatch, tmp_path, write_run())
    for _ in range(2):
        assert entry.main(env=env_for(ws, gh, INPUT_TOKEN=token)) == 0
    ours = [c for c in gh.state.comments[7] if c.login == author]
    assert len(ours) == 1 and "fresh report" in ours[0].body
    assert planted.body.endswith("someone else's") and len(gh.state.comments[7]) == 2
