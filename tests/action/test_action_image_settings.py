"""The comment images' settings from sdopt.toml's [report] section under the action's inputs,
a matrix's merged comment with every job's images, and what a re-run publishes (#22)."""

import json
import re

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import main as entry  # noqa: E402
from action.inputs import read_inputs  # noqa: E402
from tests.action.test_action_images import same_repo_publish, write_images  # noqa: E402
from tests.action.test_action_main import SHA, gh, runner_env  # noqa: E402,F401
from tests.tiny_config import tiny_config  # noqa: E402

REPORT = ('[report]\nimage_hosting = "url"\nimage_base_url = "https://pages.example/run"\n'
          'assets_branch = "ci/images"\nassets_keep_runs = 5\nassets_keep_days = 30\n')


def config(tmp_path, tail=REPORT):
    path = tmp_path / "sdopt.toml"
    path.write_text(tiny_config(tail=tail))
    return path


def test_the_configs_report_keys_apply_when_the_inputs_are_empty(tmp_path):
    inp = read_inputs({"INPUT_CONFIG": str(config(tmp_path)), "INPUT_IMAGE_HOSTING": "",
                       "INPUT_ASSETS_KEEP_RUNS": ""})          # what the runner passes
    assert (inp.image_hosting, inp.image_base_url, inp.assets_branch, inp.assets_keep_runs,
            inp.assets_keep_days) == ("url", "https://pages.example/run", "ci/images", 5, 30)


def test_inputs_override_the_config_and_config_overrides_the_file(tmp_path):
    env = {"INPUT_CONFIG": str(config(tmp_path)), "INPUT_IMAGE_HOSTING": "branch",
           "INPUT_ASSETS_KEEP_RUNS": "7",
           "INPUT_CONFIG_OVERRIDES": 'report.assets_branch = "other"\nreport.assets_keep_days = 2'}
    inp = read_inputs(env)
    assert (inp.image_hosting, inp.assets_keep_runs, inp.assets_branch, inp.assets_keep_days) \
        == ("branch", 7, "other", 2)
    assert read_inputs({**env, "INPUT_ASSETS_BRANCH": "mine"}).assets_branch == "mine"


def test_without_a_config_file_the_defaults_and_report_overrides_apply(tmp_path):
    inp = read_inputs({"INPUT_CONFIG": str(tmp_path / "absent.toml")})
    assert (inp.image_hosting, inp.assets_branch, inp.assets_keep_runs, inp.assets_keep_days,
            inp.assets_transport) == ("branch", "sdopt-assets", 20, 0, "auto")
    inp = read_inputs({"INPUT_CONFIG": str(tmp_path / "absent.toml"),
                       "INPUT_CONFIG_OVERRIDES": 'report.image_hosting = "none"'})
    assert inp.image_hosting == "none"


@pytest.mark.parametrize("tail, field", [
    ('[report]\nimage_hosting = "s3"\n', "report.image_hosting"),
    ('[report]\nimage_base_url = "javascript:alert(1)"\n', "report.image_base_url"),
    ('[report]\nassets_branch = "../main"\n', "report.assets_branch"),
    ('[report]\nassets_keep_runs = 0\n', "report.assets_keep_runs"),
    ('[report]\nassets_keep_days = "7"\n', "report.assets_keep_days"),
    ('[report]\nimage_hosting = "url"\n', "report"),
    ('[report]\nimage_host = "url"\n', "report.image_host"),
])
def test_a_bad_config_key_is_one_error_line_naming_the_file_and_field(tmp_path, capsys, tail,
                                                                      field):
    path = config(tmp_path, tail)
    assert entry.main(env={"INPUT_CONFIG": str(path),
                           "GITHUB_OUTPUT": str(tmp_path / "o")}) == 2
    errors = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("::error")]
    assert len(errors) == 1 and str(path) in errors[0] and f"'{field}'" in errors[0]


def test_assets_transport_input_is_checked():
    from sdopt.errors import SdoptError

    assert read_inputs({"INPUT_ASSETS_TRANSPORT": "GIT"}).assets_transport == "git"
    with pytest.raises(SdoptError, match="input 'assets_transport' is 'ssh'"):
        read_inputs({"INPUT_ASSETS_TRANSPORT": "ssh"})


def test_a_matrix_merged_comment_carries_every_jobs_images(tmp_path, gh):
    """mode merge: each leg's thumbnails (prefixed j01-, j02-) in this run's one folder, one
    commit; the one merged comment links each job's own images in that job's section."""
    from tests.gate.test_merge import leg

    legs = tmp_path / "legs"
    for name, device in (("sdopt-a100", "NVIDIA A100"), ("sdopt-l4", "NVIDIA L4")):
        write_images(leg(legs, name, device=device))
    payload = {"pull_request": {"number": 7, "head": {"sha": SHA,
                                                      "repo": {"full_name": "octo/widgets"}},
                                "base": {"repo": {"full_name": "octo/widgets"}}}}
    env = runner_env(tmp_path, gh, mode="merge", artifact_dir=legs, out=tmp_path / "merged",
                     config=tmp_path / "absent.toml")
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env["GITHUB_EVENT_NAME"] = "pull_request"
    assert entry.main(env={**env, "GITHUB_RUN_ID": "5"}) == 0
    files = gh.state.files("sdopt-assets")
    folders = {p.split("/")[0] for p in files}
    assert len(folders) == 1
    folder = folders.pop()
    assert {p.split("/")[1] for p in files} == {
        f"j0{i}-00-{k}.webp" for i in (1, 2) for k in ("original", "optimized", "difference")}
    commits = [r for r in gh.state.requests if r[0] == "POST" and r[1].endswith("/git/commits")]
    assert len(commits) == 1                                   # one commit for all the jobs
    comments = gh.state.comments[7]
    assert len(comments) == 1
    body = comments[0].body
    head = gh.state.refs["refs/heads/sdopt-assets"]
    a100, l4 = body.index("sdopt-a100</summary>"), body.index("sdopt-l4</summary>")
    link = f"https://github.com/octo/widgets/raw/{head}/{folder}/"
    assert a100 < body.index(link + "j01-00-optimized.webp") < l4
    assert l4 < body.index(link + "j02-00-optimized.webp")
    assert "Sample images not shown" not in body
    # A second run of the fan-in updates the same comment with its own folder's links.
    assert entry.main(env={**env, "GITHUB_RUN_ID": "6"}) == 0
    assert len(gh.state.comments[7]) == 1 and "-6-1/j02-00-optimized.webp" in \
        gh.state.comments[7][0].body


def test_a_matrix_with_url_hosting_links_each_job_directory(tmp_path, gh):
    from tests.gate.test_merge import leg

    legs = tmp_path / "legs"
    write_images(leg(legs, "sdopt-a100"))
    payload = {"pull_request": {"number": 7, "head": {"sha": SHA,
                                                      "repo": {"full_name": "octo/widgets"}},
                                "base": {"repo": {"full_name": "octo/widgets"}}}}
    env = runner_env(tmp_path, gh, mode="merge", artifact_dir=legs, out=tmp_path / "merged",
                     config=tmp_path / "absent.toml", image_hosting="url",
                     image_base_url="https://pages.example/legs")
    (tmp_path / "event.json").write_text(json.dumps(payload))
    env["GITHUB_EVENT_NAME"] = "pull_request"
    assert entry.main(env=env) == 0
    assert "(https://pages.example/legs/sdopt-a100/images/optimized/0.png)" in \
        gh.state.comments[7][0].body
    assert "refs/heads/sdopt-assets" not in gh.state.refs


def test_a_re_run_publishes_its_images_and_updates_the_comment(tmp_path, gh):
    """The same results again (a re-run, attempt 2): the images are published again, in the
    re-run's own folder, and the comment (policy always) is updated to link them; the text
    differs only by those links."""
    env = same_repo_publish(tmp_path, gh)
    assert entry.main(env={**env, "GITHUB_RUN_ID": "9", "GITHUB_RUN_ATTEMPT": "1"}) == 0
    first = gh.state.comments[7][0].body
    assert entry.main(env={**env, "GITHUB_RUN_ID": "9", "GITHUB_RUN_ATTEMPT": "2"}) == 0
    second = gh.state.comments[7][0].body
    folders = sorted({p.split("/")[0] for p in gh.state.files("sdopt-assets")})
    assert [f[-4:] for f in folders] == ["-9-1", "-9-2"]
    assert f"/{folders[1]}/00-optimized.webp)" in second and folders[0] not in second
    strip = re.compile(r"/raw/[0-9a-f]{40}/[^/]+/")
    assert strip.sub("/raw/X/", first) == strip.sub("/raw/X/", second)


def test_a_comment_left_as_it_is_publishes_no_images(tmp_path, gh, capsys):
    """comment: on-change leaves the comment alone while the verdict is unchanged: the policy
    is applied before the images are published, so such a run adds nothing to the assets
    branch (no blob, no commit), and the comment is untouched."""
    env = same_repo_publish(tmp_path, gh, comment="on-change")
    assert entry.main(env={**env, "GITHUB_RUN_ID": "1"}) == 0
    body, head = gh.state.comments[7][0].body, gh.state.refs["refs/heads/sdopt-assets"]
    gh.state.requests.clear()
    for run in ("2", "3"):
        assert entry.main(env={**env, "GITHUB_RUN_ID": run}) == 0
    assert gh.state.comments[7][0].body == body                  # kept, as the policy says
    assert gh.state.refs["refs/heads/sdopt-assets"] == head      # the branch did not grow
    assert not [r for r in gh.state.requests if "/git/" in r[1]]
    assert "PR comment left as it is" in capsys.readouterr().out


@pytest.mark.parametrize("inputs", [{"comment": "on-regression"}, {"comment": "never"}])
def test_a_comment_never_posted_publishes_no_images(tmp_path, gh, inputs):
    """A pass under on-regression starts no comment, and comment: never posts none: no image
    is published for a comment nobody will see (the artifact has them)."""
    from tests.action.test_action_main import verdict_doc

    env = same_repo_publish(tmp_path, gh, **inputs)
    (tmp_path / "sdopt-out" / "verdict.json").write_text(json.dumps(verdict_doc("pass", ())))
    assert entry.main(env=env) == 0
    assert 7 not in gh.state.comments
    assert "refs/heads/sdopt-assets" not in gh.state.refs and not gh.state.blobs


def test_a_kept_comments_links_still_resolve_after_later_runs(tmp_path, gh):
    """A comment left alone keeps linking its images at the commit that added them, which
    stays on the (only fast-forwarded) branch: later runs that publish (here another config's
    comment on the same pull request), and pruning the kept comment's folder from the branch's
    tip, never break them."""
    env = same_repo_publish(tmp_path, gh, comment="on-change", assets_keep_runs="1")
    assert entry.main(env={**env, "GITHUB_RUN_ID": "1"}) == 0
    body = gh.state.comments[7][0].body
    other = {**env, "INPUT_COMMENT": "always", "INPUT_COMMENT_KEY": "other"}
    for run in ("2", "3"):
        assert entry.main(env={**other, "GITHUB_RUN_ID": run}) == 0
        assert entry.main(env={**env, "GITHUB_RUN_ID": run}) == 0  # on-change: kept
    assert gh.state.comments[7][0].body == body
    assert len(gh.state.comments[7]) == 2
    links = re.findall(r"/raw/([0-9a-f]{40})/([^/)]+)/([^/)]+)\)", body)
    assert links
    head = gh.state.refs["refs/heads/sdopt-assets"]
    tip = gh.state.files("sdopt-assets")
    assert {p.split("/")[0].split("Z", 1)[1] for p in tip} == {"-3-1-other"}
    for commit, folder, name in links:
        assert commit in gh.state.ancestors(head)
        flat = gh.state.flat(gh.state.commits[commit]["tree"])
        assert f"{folder}/{name}" in flat                         # resolves at its commit
        assert f"{folder}/{name}" not in tip                      # though pruned at the tip


def test_every_commenting_example_job_may_write_the_assets_branch():
    """image_hosting: branch (the default) writes with the job's token, which needs contents:
    write beside pull-requests: write; a job that comments with less shows no images (every
    comment would carry the one-line reason). Checked on every example job that runs the
    action and comments (a job's permissions replace the workflow's)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples" / "workflows"
    commenting = []
    for path in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for name, job in doc["jobs"].items():
            for step in job.get("steps", []):
                if "sdopt-action" not in str(step.get("uses", "")):
                    continue
                inputs = step.get("with") or {}
                if inputs.get("comment", "always") == "never" or \
                        inputs.get("image_hosting", "branch") != "branch":
                    continue
                perms = job.get("permissions", doc.get("permissions"))
                assert perms.get("contents") == "write", (path.name, name)
                assert perms.get("pull-requests") == "write", (path.name, name)
                commenting.append(f"{path.stem}:{name}")
    assert len(commenting) >= 3, commenting           # the gate, the commenter, the merge
