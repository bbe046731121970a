"""The PR comment's sample images through the entrypoint (action/main.py host_images): the
workflow_run commenter publishes a fork's artifact's images to the assets branch of the fake
GitHub (tests/fake_github.py), refuses what is not an image within the limits, and says why
in one line when nothing can be published."""

import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action import main as entry  # noqa: E402
from action.inputs import read_inputs  # noqa: E402
from sdopt.errors import SdoptError  # noqa: E402
from sdopt.report.markdown import MAX_CHARS  # noqa: E402
from tests.action.test_action_main import artifact, gh, runner_env  # noqa: E402,F401
from tests.report.test_thumbnails import run  # noqa: E402,F401


def write_images(art, *, optimized=None):
    rng = np.random.default_rng(0)
    for label in ("original", "optimized"):
        (art / "images" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            art / "images" / label / "0.png")
    if optimized is not None:
        optimized(art / "images" / "optimized" / "0.png")


def branch_files(gh):
    return gh.state.files("sdopt-assets") if "refs/heads/sdopt-assets" in gh.state.refs else {}


def test_fork_artifact_images_land_on_the_branch_and_in_one_comment(tmp_path, gh, artifact,
                                                                      capsys):
    write_images(artifact)
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    for run_id in ("101", "102"):
        assert entry.main(env={**env, "GITHUB_RUN_ID": run_id}) == 0
    comments = gh.state.comments[7]
    assert len(comments) == 1                                   # updated, not a second one
    body = comments[0].body
    files = branch_files(gh)
    folders = sorted({p.split("/")[0] for p in files})
    assert len(folders) == 2 and all(re.fullmatch(r"\d{8}T\d{6}Z-10[12]-1", f) for f in folders)
    head = gh.state.refs["refs/heads/sdopt-assets"]
    for name in ("00-original.webp", "00-optimized.webp", "00-difference.webp"):
        assert f"{folders[-1]}/{name}" in files
        assert f"(https://github.com/octo/widgets/raw/{head}/{folders[-1]}/{name})" in body
    assert "data:" not in body and len(body) < MAX_CHARS
    assert "<script>" not in body and "@team" not in body       # the prompt, escaped, as alt
    assert "rw" not in capsys.readouterr().out.replace("::add-mask::rw", "")


@pytest.mark.parametrize("hostile, why", [
    (lambda p: p.write_text("#!/bin/sh\necho pwned"), "not a readable PNG"),
    (lambda p: (p.unlink(), os.symlink("/etc/passwd", p)), "symbolic link"),
])
def test_hostile_files_are_refused_and_never_published(tmp_path, gh, artifact, hostile, why,
                                                       capsys):
    write_images(artifact, optimized=hostile)
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    out = capsys.readouterr().out
    assert why in out
    published = branch_files(gh)
    assert b"pwned" not in b"".join(published.values()) and b"root:" not in b"".join(
        published.values())
    # The optimized image is the row's subject: without it the row, and so the comment's
    # images, are left out, and the comment says why in one line with the artifact's link.
    body = gh.state.comments[7][0].body
    line = [ln for ln in body.splitlines() if ln.startswith("Sample images not shown")]
    assert len(line) == 1 and "images/optimized/0.png" in line[0]


def test_a_path_leaving_the_artifact_is_refused(tmp_path, gh, artifact, capsys):
    write_images(artifact)
    doc = json.loads((artifact / "results.json").read_text())
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "outside.png")   # a real image
    doc["variants"]["optimized"]["images"][0]["path"] = "../outside.png"
    (artifact / "results.json").write_text(json.dumps(doc))
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    assert "leaves the results directory" in capsys.readouterr().out
    assert branch_files(gh) == {}


def test_an_oversized_image_is_refused(tmp_path, gh, artifact, capsys, monkeypatch):
    from sdopt.report import thumbnails

    write_images(artifact)
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_BYTES", 2000)
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    assert "over the 2,000-byte limit" in capsys.readouterr().out
    assert branch_files(gh) == {}


def test_a_token_that_cannot_write_contents_says_why_and_links_the_artifact(
        tmp_path, gh, artifact):
    write_images(artifact)
    gh.state.git_empty = True          # the git data API refuses (409) as on an empty repository
    url = "https://github.com/octo/widgets/actions/runs/1/artifacts/2"
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact, artifact_url=url)
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body
    line = [ln for ln in body.splitlines() if ln.startswith("Sample images not shown")]
    assert len(line) == 1 and "409" in line[0] and f"[the results artifact]({url})" in line[0]


def test_url_hosting_links_the_output_directory_and_writes_no_branch(tmp_path, gh, artifact):
    write_images(artifact)
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact,
                     image_hosting="url", image_base_url="https://pages.example/run1")
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body
    assert "(https://pages.example/run1/images/optimized/0.png)" in body
    assert branch_files(gh) == {} and not any("/git/" in p for _, p in gh.state.requests)


def test_none_hosting_shows_no_images_and_says_nothing(tmp_path, gh, artifact):
    write_images(artifact)
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact, image_hosting="none")
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body
    assert "Sample images" not in body and branch_files(gh) == {}


@pytest.mark.parametrize("inputs, field", [
    ({"image_hosting": "s3"}, "image_hosting"),
    ({"image_hosting": "url"}, "image_hosting"),
    ({"image_base_url": "javascript:alert(1)"}, "image_base_url"),
    ({"image_base_url": "https://x/a)b"}, "image_base_url"),
    ({"assets_branch": "../main"}, "assets_branch"),
    ({"assets_keep_runs": "0"}, "assets_keep_runs"),
    ({"assets_keep_runs": "ten"}, "assets_keep_runs"),
])
def test_bad_image_inputs_name_the_input(inputs, field):
    with pytest.raises(SdoptError, match=f"input '{field}'"):
        read_inputs({f"INPUT_{k.upper()}": v for k, v in inputs.items()})


def test_a_same_job_run_shows_the_base_commits_image_it_judged(tmp_path, gh, artifact):
    from tests.action.test_action_main import results_doc, verdict_doc

    write_images(artifact)
    doc = results_doc(prompt="a cat")
    doc["config"]["same_job"] = {"base_ref": "b" * 40, "side": "head", "job": "j1"}
    (artifact / "results.json").write_text(json.dumps(doc))
    (artifact / "base" / "images" / "optimized").mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(
        artifact / "base" / "images" / "optimized" / "0.png")
    verdict = verdict_doc()
    verdict["quality"]["images"] = [{"prompt": "a cat", "seed": 0, "psnr_db": 12.0, "ssim": 0.1,
                                     "baseline_path": "images/optimized/0.png",
                                     "current_path": "images/optimized/0.png",
                                     "regressed": True}]
    (artifact / "verdict.json").write_text(json.dumps(verdict))
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env=env) == 0
    files = branch_files(gh)
    baseline = [v for p, v in files.items() if p.endswith("00-baseline.webp")]
    assert len(baseline) == 1
    with Image.open(io.BytesIO(baseline[0])) as img:
        assert img.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert "00-baseline.webp)" in gh.state.comments[7][0].body


def same_repo_publish(tmp_path, gh, **inputs):
    from tests.action.test_action_main import pr_env, results_doc, verdict_doc

    out = tmp_path / "sdopt-out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc()))
    (out / "verdict.json").write_text(json.dumps(verdict_doc()))
    (out / "report.md").write_text("the run's report")
    write_images(out)
    return {**pr_env(tmp_path, gh, out=out, **inputs), "SDOPT_PHASE": "publish",
            "INPUT_ARTIFACT_URL": "https://github.com/octo/widgets/actions/runs/1/artifacts/2"}


def test_a_same_repository_pr_publishes_its_images_in_the_publish_phase(tmp_path, gh):
    env = same_repo_publish(tmp_path, gh)
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body
    head = gh.state.refs["refs/heads/sdopt-assets"]
    assert f"(https://github.com/octo/widgets/raw/{head}/" in body
    assert "](https://github.com/octo/widgets/actions/runs/1/artifacts/2)" in body


def test_without_contents_write_the_comment_says_why_in_one_line(tmp_path, gh):
    from tests.fake_github import Token

    gh.state.tokens["pr-only"] = Token("github-actions[bot]", contents_write=False)
    env = same_repo_publish(tmp_path, gh, token="pr-only")
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body                   # the comment itself is still posted
    line = [ln for ln in body.splitlines() if ln.startswith("Sample images not shown")]
    assert len(line) == 1 and "403" in line[0] and "contents: write" in line[0]
    assert "[the results artifact](https://github.com/octo/widgets/actions/runs/1/artifacts/2)" \
        in line[0]
    assert "the run's report" in body and "refs/heads/sdopt-assets" not in gh.state.refs


def test_the_re_rendered_comment_keeps_the_configs_own_templates(tmp_path, gh):
    """Adding the image links re-renders the run's report: with the user's [report] templates,
    as sdopt gate rendered it."""
    from tests.tiny_config import tiny_config

    ws = tmp_path / "ws"
    (ws / "tpl").mkdir(parents=True)
    (ws / "sdopt.toml").write_text(tiny_config(tail='\n[report]\ntemplates = "tpl"\n'))
    (ws / "tpl" / "report.md.j2").write_text(
        "CUSTOM{% for row in md_images %} {{ row.prompt }}:{{ row.cells|length }}{% endfor %}")
    env = same_repo_publish(tmp_path, gh, config=ws / "sdopt.toml")
    assert entry.main(env=env) == 0
    assert "CUSTOM a cat:3" in gh.state.comments[7][0].body


@pytest.mark.parametrize("value", ["-1", "x", "99999"])
def test_bad_keep_days_names_the_input(value):
    with pytest.raises(SdoptError, match="input 'assets_keep_days'"):
        read_inputs({"INPUT_ASSETS_KEEP_DAYS": value})


def test_the_worst_comment_stays_under_the_limit_with_whole_links(run):
    """The most a comment can hold: MAX_PROMPTS prompts, each thousands of characters of
    markdown-active text, every kind of image. The posted body (with the action's markers)
    is at most 65,536 characters and every image link in it is whole (a row is shortened or
    dropped, never a link cut in half)."""
    from action.comment import cap_body, verdict_marker
    from sdopt.report import build_context, render_markdown
    from sdopt.report import thumbnails
    from sdopt.report.thumbnails import select
    from tests.report.test_thumbnails import _load

    results = _load("current/results.json")
    n = thumbnails.MAX_PROMPTS
    prompts = [f"{i} " + "|*_<a>[x](javascript:y) " * 200 for i in range(n)]
    results["config"]["prompts"] = prompts
    for label in ("original", "optimized"):
        results["variants"][label]["images"] = [
            {"prompt": p, "seed": 0, "path": f"images/{label}/{i}.png"}
            for i, p in enumerate(prompts)]
        for i in range(2, n):
            shutil.copyfile(run / "images" / label / "0.png", run / "images" / label / f"{i}.png")
    sel = select(results, run, budget=10**9)
    assert len(sel.rows) == n
    base = "https://github.com/octo/widgets/raw/" + "f" * 40 + "/20261130T120000Z-1-1"
    context = build_context(results, run, html=False,
                            artifact_url="https://github.com/octo/widgets/actions/runs/1")
    context.update(thumbnails.markdown_rows(sel, base))
    body = cap_body(f"{verdict_marker('pass')}\n{render_markdown(context)}")
    assert len(body) <= MAX_CHARS and "data:" not in body
    links = re.findall(r"\]\((https://github\.com/octo/widgets/raw/[^)\s]*)\)", body)
    names = {f.name for f in sel.files}
    assert len(links) == len(sel.files) == 3 * n          # each prompt's every image, whole
    assert all(link.startswith(base + "/") and link[len(base) + 1:] in names for link in links)


def test_every_hostile_input_at_once_one_line_each_and_only_the_run_folder(
        tmp_path, gh, artifact, capsys, monkeypatch):
    """A fork's artifact with one good prompt and, for four others, a script named .png, an
    image over the size limit, a path out of the artifact and a symbolic link: each is refused
    with exactly one log line naming it, the good prompt's images are published, and the
    branch holds nothing but this run's folder with sdopt's own file names."""
    from sdopt.report import thumbnails

    prompts = ["good", "script", "oversized", "escape", "link"]
    doc = json.loads((artifact / "results.json").read_text())
    doc["config"]["prompts"] = prompts
    rng = np.random.default_rng(1)
    for label in ("original", "optimized"):
        (artifact / "images" / label).mkdir(parents=True)
        doc["variants"][label]["images"] = [
            {"prompt": p, "seed": 0, "path": f"images/{label}/{i}.png"}
            for i, p in enumerate(prompts)]
        for i in range(len(prompts)):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                artifact / "images" / label / f"{i}.png")
    opt = artifact / "images" / "optimized"
    (opt / "1.png").write_text("#!/bin/sh\necho pwned")
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(opt / "2.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    doc["variants"]["optimized"]["images"][3]["path"] = "../outside.png"
    (opt / "4.png").unlink()
    os.symlink("/etc/passwd", opt / "4.png")
    (artifact / "results.json").write_text(json.dumps(doc))
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_BYTES", 50_000)   # 32 px passes, 256 px not
    env = runner_env(tmp_path, gh, mode="comment", artifact_dir=artifact)
    assert entry.main(env={**env, "GITHUB_RUN_ID": "77"}) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("comment images: ")]
    for path, why in (("images/optimized/1.png", "not a readable"),
                      ("images/optimized/2.png", "50,000-byte limit"),
                      ("../outside.png", "leaves the results directory"),
                      ("images/optimized/4.png", "symbolic link")):
        mine = [ln for ln in out.splitlines() if path in ln]
        assert len(mine) == 1 and why in mine[0] and mine[0] in lines, (path, out)
    files = branch_files(gh)
    assert {p.split("/")[0] for p in files} == {next(iter(files)).split("/")[0]}
    assert next(iter(files)).split("/")[0].endswith("-77-1")
    assert all(p.count("/") == 1 for p in files)
    assert sorted(p.split("/")[1] for p in files) == [
        "00-difference.webp", "00-optimized.webp", "00-original.webp"]
    blob = b"".join(files.values())
    assert b"pwned" not in blob and b"root:" not in blob
    body = gh.state.comments[7][0].body
    assert "00-optimized.webp)" in body and "Sample images not shown" not in body


def test_a_fork_pull_requests_gate_publishes_no_image_and_keeps_them_for_the_artifact(
        tmp_path, gh, capsys):
    """The gate job of a fork's pull request has a read-only token: it tries no write (no git
    data request, no comment) and leaves the images in the output directory that action.yml
    uploads as the artifact, for the workflow_run commenter to publish."""
    env = same_repo_publish(tmp_path, gh)
    payload = json.loads((tmp_path / "event.json").read_text())
    payload["pull_request"]["head"]["repo"] = {"full_name": "mallory/widgets"}
    (tmp_path / "event.json").write_text(json.dumps(payload))
    assert entry.main(env=env) == 0
    assert not [r for r in gh.state.requests if "/git/" in r[1] or "/comments" in r[1]]
    assert "refs/heads/sdopt-assets" not in gh.state.refs and 7 not in gh.state.comments
    assert "fork" in capsys.readouterr().out
    out = tmp_path / "sdopt-out"
    assert (out / "images" / "optimized" / "0.png").is_file()
    assert (out / "images" / "original" / "0.png").is_file()


def test_a_network_failure_while_publishing_still_posts_the_comment(tmp_path, gh, monkeypatch):
    """GitHub unreachable while the images are written (PyGithub lets requests' connection
    errors through): the comment is still posted, with one line saying why it has no images,
    and the step does not fail."""
    import requests

    from action import assets

    def unreachable(self, files):
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='api.github.com', port=443): Max retries exceeded\n"
            "(Caused by NewConnectionError: Connection refused)")

    monkeypatch.setattr(assets._ApiWriter, "store", unreachable)
    env = same_repo_publish(tmp_path, gh, assets_transport="api")
    assert entry.main(env=env) == 0
    body = gh.state.comments[7][0].body
    line = [ln for ln in body.splitlines() if ln.startswith("Sample images not shown")]
    assert len(line) == 1 and "ConnectionError" in line[0] and "Connection refused" in line[0]
    assert "the run's report" in body
