"""The entrypoint end to end in-process: comment mode from an artifact, publishing rules,
config overrides and exit codes (the gate mode against the real ``sdopt gate`` is in
test_action_gate.py; the container run in tests/container/)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import event, main as entry  # noqa: E402
from action.comment import ACTIONS_BOT, marker  # noqa: E402
from action.inputs import ActionInputs, read_inputs  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402
from tests.action.test_action_workflow import parse_github_output  # noqa: E402

SHA = "a" * 40   # the fake server's head SHA of PR 7


def results_doc(orig=0.2, opt=0.1, prompt="a cat"):
    def variant(label, median):
        return {"label": label, "backend": "torch_eager", "techniques": [],
                "latency_s": {"samples": [median] * 3, "median": median, "iqr": 0.0,
                              "mean": median, "min": median, "max": median},
                "throughput_images_per_s": 1 / median,
                "stages_s": {"text_encoder": 0.0, "unet": median, "vae_decode": 0.0},
                "peak_memory_bytes": None, "memory_kind": "rss",
                "images": [{"prompt": prompt, "seed": 0, "path": f"images/{label}/0.png"}]}
    return {"schema_version": 1, "kind": "sdopt-bench-results", "created_unix": 0,
            "sdopt_version": "0.1.0",
            "config": {"model": "tiny", "prompts": [prompt], "seeds": [0], "height": 64,
                       "width": 64, "steps": 2, "guidance_scale": 7.5, "batch": 1, "runs": 3},
            "environment": {"device": {"kind": "cpu", "name": "test CPU"}, "libraries": {}},
            "variants": {"original": variant("original", orig),
                                            "optimized": variant("optimized", opt)},
            "optimization": None}


def verdict_doc(state="regression", reasons=("latency 1.50x the baseline's (tolerance 1.10x)",)):
    """A verdict as ``sdopt compare`` writes it (it must follow the shipped schema)."""
    return {"schema_version": 1, "kind": "sdopt-verdict", "verdict": state,
            "reasons": list(reasons), "variant": "optimized",
            "latency": {"baseline_median_s": 0.1, "current_median_s": 0.15, "ratio": 1.5,
                        "tolerance": 0.1, "p_value": 0.01, "test": "mann-whitney-u",
                        "regressed": state == "regression"},
            "quality": {"metric": "psnr+ssim", "threshold": 30.0, "psnr_min_db": 30.0,
                        "ssim_min": 0.9, "regressed": False, "images": []},
            "baseline": {"source": "x", "environment_match": state != "not_comparable"}}


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token(ACTIONS_BOT), "ro": Token(ACTIONS_BOT, write=False)})
    with FakeGitHub(state) as server:
        yield server


@pytest.fixture
def artifact(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "results.json").write_text(json.dumps(results_doc(prompt="<script>@team |x|")))
    (art / "verdict.json").write_text(json.dumps(verdict_doc()))
    (art / "report.md").write_text("FORGED by the fork: @everyone")
    (art / event.CONTEXT_FILE).write_text(json.dumps(
        {"repository": "octo/widgets", "number": 7, "head_sha": SHA,
         "head_repository": "mallory/widgets", "event_name": "pull_request"}))
    return art


def runner_env(tmp_path, gh, token="rw", **inputs):
    payload = {"workflow_run": {"head_sha": SHA, "event": "pull_request", "pull_requests": []},
               "repository": {"full_name": "octo/widgets"}}
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env = {"GITHUB_EVENT_PATH": str(tmp_path / "event.json"), "GITHUB_EVENT_NAME": "workflow_run",
           "GITHUB_REPOSITORY": "octo/widgets", "GITHUB_API_URL": gh.url,
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "INPUT_TOKEN": token}
    env.update({f"INPUT_{k.upper()}": str(v) for k, v in inputs.items()})
    return env


def test_comment_mode_creates_then_updates_from_the_artifact(tmp_path, gh, artifact, capsys):
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    assert entry.main(env=env) == 0
    comments = gh.state.comments[7]
    assert len(comments) == 1
    body = comments[0].body
    assert body.startswith(marker())
    assert "FORGED" not in body                      # re-rendered from JSON, not the fork's markdown
    assert "<script>" not in body and "@team" not in body   # escaped
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "regression" and outputs["speedup"] == "2.0000"
    assert outputs["comment_url"].endswith(f"#issuecomment-{comments[0].id}")
    assert "regression" in (tmp_path / "summary.md").read_text()
    assert "rw" not in capsys.readouterr().out.replace("::add-mask::rw", "")


def test_comment_mode_read_only_token_degrades_to_summary(tmp_path, gh, artifact, capsys):
    env = runner_env(tmp_path, gh, token="ro", mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    out = capsys.readouterr().out
    assert "::warning title=sdopt::no PR comment: GitHub API answered 403" in out
    assert 7 not in gh.state.comments
    assert (tmp_path / "summary.md").read_text().strip()
    assert parse_github_output((tmp_path / "output").read_text())["comment_url"] == ""


def test_comment_mode_refuses_an_artifact_from_another_commit(tmp_path, gh, artifact, capsys):
    ctx = json.loads((artifact / event.CONTEXT_FILE).read_text())
    ctx["head_sha"] = "f" * 40
    (artifact / event.CONTEXT_FILE).write_text(json.dumps(ctx))
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 2
    assert "::error title=sdopt%3A bad input::" in capsys.readouterr().out
    assert 7 not in gh.state.comments


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, gh, capsys):
    assert entry.main(env=runner_env(tmp_path, gh, mode="deploy")) == 2
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("::error")]
    assert len(lines) == 1 and "input 'mode'" in lines[0]


def test_fork_pull_request_publishes_summary_only(tmp_path, gh, capsys):
    ctx = event.PullRequestContext("octo/widgets", 7, SHA, "mallory/widgets", "pull_request")
    env = runner_env(tmp_path, gh)
    url = entry.publish(ActionInputs(token="rw"), env, ctx, tmp_path, None, None, "report body")
    assert url == "" and 7 not in gh.state.comments
    assert "fork" in capsys.readouterr().out
    assert "report body" in (tmp_path / "summary.md").read_text()


def test_push_event_publishes_summary_only(tmp_path, gh):
    ctx = event.PullRequestContext("octo/widgets", None, SHA, None, "push")
    env = runner_env(tmp_path, gh)
    assert entry.publish(ActionInputs(token="rw"), env, ctx, tmp_path, None, None, "x") == ""
    assert gh.state.requests == []


@pytest.mark.parametrize("state, fail_on, code", [
    ("pass", ("regression", "not_comparable"), 0),
    ("regression", ("regression", "not_comparable"), 1),
    ("not_comparable", ("regression", "not_comparable"), 3),
    ("not_comparable", ("regression",), 0),
    ("regression", (), 0),
])
def test_exit_code_follows_verdict_and_fail_on(state, fail_on, code):
    assert entry.exit_code(ActionInputs(fail_on=fail_on), {"verdict": state}, 9) == code
    assert entry.exit_code(ActionInputs(), None, 9) == 9


def test_overrides_reach_sdopt_as_set_options_and_no_file_is_written(tmp_path):
    """The inputs' thresholds and config_overrides become --set options of the CLI (the one
    override rule), in order; nothing is written next to the user's config."""
    cfg = tmp_path / "sdopt.toml"
    cfg.write_text('model = "tiny"\n[gate]\nlatency_tolerance = 0.1\n')
    inp = read_inputs({"INPUT_CONFIG": str(cfg), "INPUT_LATENCY_TOLERANCE": "0.25",
                       "INPUT_CONFIG_OVERRIDES": "bench.runs = 5\nmodel = 'tiny'"})
    assert entry.gate_args(inp) == ["--config", str(cfg), "--set", "gate.latency_tolerance = 0.25",
                                    "--set", "bench.runs = 5", "--set", "model = 'tiny'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdopt.toml"]
    assert entry.gate_args(ActionInputs(config=str(cfg))) == ["--config", str(cfg)]


def test_config_and_override_errors_name_the_input(tmp_path):
    from sdopt.errors import SdoptError

    with pytest.raises(SdoptError, match="input 'config'"):
        entry.gate_args(ActionInputs(config=str(tmp_path / "nope.toml")))
    with pytest.raises(SdoptError, match="input 'config_overrides' line 1 .*not a TOML value"):
        read_inputs({"INPUT_CONFIG_OVERRIDES": "model = tiny"})


def test_merge_mode_posts_one_comment_for_all_legs(tmp_path, gh, capsys):
    from tests.gate.test_merge import leg

    legs = tmp_path / "legs"
    leg(legs, "sdopt-a100", device="NVIDIA A100")
    leg(legs, "sdopt-l4", state="regression", reasons=["latency 1.4x the baseline's"])
    payload = {"pull_request": {"number": 7, "head": {"sha": SHA, "repo": {"full_name": "octo/widgets"}},
                                "base": {"repo": {"full_name": "octo/widgets"}}}}
    env = runner_env(tmp_path, gh, mode="merge", artifact_dir=legs, out=tmp_path / "merged")
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env["GITHUB_EVENT_NAME"] = "pull_request"
    assert entry.main(env=env) == 1
    assert "::error title=sdopt%3A performance regression" in capsys.readouterr().out
    body = gh.state.comments[7][0].body
    assert "sdopt-a100" in body and "sdopt-l4" in body and "NVIDIA A100" in body
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "regression"
    assert outputs["report_markdown"] == str(tmp_path / "merged" / "report.md")
    assert entry.main(env={**env, "INPUT_ARTIFACT_DIR": str(tmp_path / "empty")}) == 2


@pytest.mark.parametrize("verdict_state, expected", [("not_comparable", 3), (None, 2)])
def test_not_comparable_exit_3_is_still_published_but_bad_input_is_not(
        tmp_path, gh, monkeypatch, capsys, verdict_state, expected):
    """sdopt exits 3 for a pair it cannot compare, and the summary must still show the verdict
    (the PR should say why nothing was judged); exit 2 is bad input only, and publishes nothing
    (a verdict.json left by an earlier run is not this run's)."""
    cfg = tmp_path / "sdopt.toml"
    cfg.write_text('model = "tiny"\n')
    out = tmp_path / "out"

    def fake_sdopt(args, env, **kwargs):
        target = Path(args[args.index("--out") + 1])     # the fresh directory of this run
        target.mkdir()
        (target / "results.json").write_text(json.dumps(results_doc()))
        if verdict_state:
            (target / "verdict.json").write_text(json.dumps(verdict_doc(
                verdict_state, ["not comparable: results from another machine: name X vs Y"])))
            return 3, ["baseline 'b' and results 'out' are not comparable: another machine"]
        (target / "verdict.json").write_text(json.dumps(verdict_doc("not_comparable", ["stale"])))
        return 2, ["sdopt.toml: field 'bench.steps': expected an integer"]

    monkeypatch.setattr(entry, "run_sdopt", fake_sdopt)
    env = runner_env(tmp_path, gh)
    env["GITHUB_EVENT_NAME"] = "push"
    assert entry.run_gate(ActionInputs(config=str(cfg), out=str(out), token="rw"), env) == expected
    summary = (tmp_path / "summary.md").read_text() if (tmp_path / "summary.md").exists() else ""
    if verdict_state:
        assert "not comparable" in summary and "another machine" in summary
        assert parse_github_output((tmp_path / "output").read_text())["verdict"] == \
            "not_comparable"
        assert (out / "verdict.json").is_file()
    else:
        assert summary == "" and not (tmp_path / "output").exists() and not out.exists()
        assert "expected an integer" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sdopt-run-")] == []


def test_comment_mode_refuses_an_artifact_that_breaks_the_schema(tmp_path, gh, artifact, capsys):
    """An artifact is read by sdopt's own validating reader: a forged field is one error line
    naming the file and the field, and nothing is posted."""
    doc = json.loads((artifact / "results.json").read_text())
    doc["variants"]["optimized"]["latency_s"]["median"] = "fast"
    (artifact / "results.json").write_text(json.dumps(doc))
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 2
    errors = [x for x in capsys.readouterr().out.splitlines() if x.startswith("::error")]
    assert len(errors) == 1 and "results.json" in errors[0]
    assert "variants.optimized.latency_s.median" in errors[0]
    assert 7 not in gh.state.comments


def test_the_action_keeps_no_copy_of_sdopt_names():
    """File names, verdicts and exit codes come from sdopt: a literal copy in action/ would
    drift the day sdopt changes one (as "not comparable" moved from exit 2 to 3)."""
    import ast
    from pathlib import Path

    from sdopt.gate import results

    names = {results.RESULTS_NAME, results.VERDICT_NAME, results.MERGED_NAME,
             results.REPORT_HTML_NAME, results.REPORT_MARKDOWN_NAME, *results.VERDICTS}
    for path in sorted((Path(__file__).resolve().parents[2] / "action").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                raise AssertionError(f"{path.name}:{node.lineno}: {node.value!r} is a copy of an "
                                     "sdopt name: import it from sdopt.gate.results")


def pr_env(tmp_path, gh, **inputs):
    """A same-repository pull_request run of PR 7 (the fake server's)."""
    payload = {"number": 7, "pull_request": {"number": 7, "head": {
        "sha": SHA, "repo": {"full_name": "octo/widgets"}}, "base": {"sha": "b" * 40}},
        "repository": {"full_name": "octo/widgets"}}
    env = runner_env(tmp_path, gh, **inputs)
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env["GITHUB_EVENT_NAME"] = "pull_request"
    return env


def test_run_phase_leaves_the_comment_to_the_publish_phase(tmp_path, gh, capsys):
    """action.yml's run step writes the summary only; its publish step (after the upload)
    comments, linking the artifact, with the run's own report."""
    out = tmp_path / "sdopt-out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc()))
    (out / "verdict.json").write_text(json.dumps(verdict_doc()))
    (out / "report.md").write_text("the run's report")
    env = pr_env(tmp_path, gh, out=out)
    ctx = event.from_event(env)
    inp = read_inputs({**env, "SDOPT_PHASE": "run"})
    assert entry.publish(inp, env, ctx, out, None, None, "the run's report", phase="run") == ""
    assert gh.state.requests == [] and "the run's report" in (tmp_path / "summary.md").read_text()
    assert entry.wants_publish(inp, "run") == "true"
    # comment: never still publishes the check run; with check_run: false nothing is left
    assert entry.wants_publish(read_inputs({"INPUT_COMMENT": "never"}), "run") == "true"
    assert entry.wants_publish(read_inputs({"INPUT_COMMENT": "never", "INPUT_CHECK_RUN": "false"}),
                               "run") == "false"

    (tmp_path / "summary.md").write_text("")
    url = "https://github.com/octo/widgets/actions/runs/1/artifacts/2"
    publish_env = {**env, "SDOPT_PHASE": "publish", "INPUT_ARTIFACT_URL": url}
    assert entry.main(env=publish_env) == 0
    body = gh.state.comments[7][0].body
    assert "the run's report" in body and f"[Download the results]({url})" in body
    assert "<!-- sdopt-verdict:regression -->" in body
    assert (tmp_path / "summary.md").read_text() == ""        # written once, by the run step
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["comment_url"].endswith(f"#issuecomment-{gh.state.comments[7][0].id}")


def test_publish_phase_follows_the_comment_policy(tmp_path, gh, capsys):
    out = tmp_path / "sdopt-out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc()))
    (out / "verdict.json").write_text(json.dumps(verdict_doc("pass", ())))
    (out / "report.md").write_text("all fine")
    env = {**pr_env(tmp_path, gh, out=out, comment="on-regression"), "SDOPT_PHASE": "publish"}
    assert entry.main(env=env) == 0
    assert 7 not in gh.state.comments                          # a pass starts no comment
    assert "left as it is" in capsys.readouterr().out


def test_bad_phase_is_refused(tmp_path, gh, capsys):
    assert entry.main(env={**runner_env(tmp_path, gh), "SDOPT_PHASE": "later"}) == 2
    assert "SDOPT_PHASE" in capsys.readouterr().out
