"""The comment's images on an orphan branch (action/assets.py), against the local GitHub REST
stand-in's git data API (tests/fake_github.py)."""

from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("github", reason="PyGithub is not installed (pip install PyGithub)")

from action.assets import (PublishError, check_branch, publish_images,  # noqa: E402
                           run_folder)
from sdopt.errors import SdoptError  # noqa: E402
from sdopt.report.thumbnails import Thumbnail  # noqa: E402
from tests.fake_github import FakeGitHub, State, Token  # noqa: E402

REPO = "octo/widgets"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def gh():
    state = State(tokens={"rw": Token("github-actions[bot]"),
                          "ro": Token("github-actions[bot]", write=False)})
    with FakeGitHub(state) as server:
        yield server


def files(tag: bytes = b"x"):
    return [Thumbnail("00-original.webp", "original", b"RIFF" + tag),
            Thumbnail("00-difference.webp", "difference", b"RIFF-d" + tag)]


def publish(gh, folder, token="rw", **kw):
    return publish_images(files(folder.encode()), token=token, repository=REPO, folder=folder,
                          api_url=gh.url, sleep=lambda s: None, **kw)


def test_first_run_creates_the_orphan_branch_with_the_runs_folder(gh):
    folder = run_folder("41", "1", now=T0)
    done = publish(gh, folder)
    st = gh.state
    assert st.refs["refs/heads/sdopt-assets"] == done.commit
    assert st.commits[done.commit]["parents"] == []          # shares no history with the code
    assert st.files("sdopt-assets") == {f"{folder}/00-original.webp": b"RIFF" + folder.encode(),
                                        f"{folder}/00-difference.webp":
                                            b"RIFF-d" + folder.encode()}
    assert done.base_url == f"https://github.com/{REPO}/raw/{done.commit}/{folder}"


def test_later_runs_fast_forward_and_prune_the_oldest(gh):
    folders = [run_folder(str(i), "1", now=T0 + timedelta(minutes=i)) for i in range(5)]
    commits = [publish(gh, f, keep_runs=3) for f in folders]
    kept = {p.split("/")[0] for p in gh.state.files("sdopt-assets")}
    assert kept == set(folders[2:])
    assert commits[3].pruned == [folders[0]] and commits[4].pruned == [folders[1]]
    head = gh.state.refs["refs/heads/sdopt-assets"]
    assert {c.commit for c in commits} <= gh.state.ancestors(head)    # never forced


def test_a_concurrent_push_is_retried_from_the_new_head(gh):
    first = run_folder("1", "1", now=T0)
    publish(gh, first)
    other = run_folder("2", "1", now=T0 + timedelta(minutes=1))

    def concurrent(state):                   # another job's run lands just before our update
        tree = state.commits[state.refs["refs/heads/sdopt-assets"]]["tree"]
        flat = state.flat(tree)
        flat[f"{other}/00-original.webp"] = ("100644", state.put_blob(b"theirs"))
        state.refs["refs/heads/sdopt-assets"] = state.put_commit(
            state.build(flat), [state.refs["refs/heads/sdopt-assets"]], "theirs")

    gh.state.before_ref_write.append(concurrent)
    mine = run_folder("3", "1", now=T0 + timedelta(minutes=2))
    done = publish(gh, mine)
    assert done.attempts == 2
    kept = {p.split("/")[0] for p in gh.state.files("sdopt-assets")}
    assert kept == {first, other, mine}                       # nobody's run was lost
    assert ("PATCH", f"/repos/{REPO}/git/refs/heads/sdopt-assets") in gh.state.requests


def test_two_jobs_creating_the_branch_at_once(gh):
    theirs = run_folder("1", "1", now=T0)

    def concurrent(state):
        sha = state.put_blob(b"theirs")
        state.refs["refs/heads/sdopt-assets"] = state.put_commit(
            state.build({f"{theirs}/00-original.webp": ("100644", sha)}), [], "theirs")

    gh.state.before_ref_write.append(concurrent)
    mine = run_folder("2", "1", now=T0 + timedelta(minutes=1))
    done = publish(gh, mine)
    assert done.attempts == 2
    assert {p.split("/")[0] for p in gh.state.files("sdopt-assets")} == {theirs, mine}


def test_other_files_on_the_branch_are_never_pruned(gh):
    sha = gh.state.put_blob(b"# images of sdopt's PR comments")
    gh.state.refs["refs/heads/sdopt-assets"] = gh.state.put_commit(
        gh.state.build({"README.md": ("100644", sha)}), [], "readme")
    for i in range(3):
        publish(gh, run_folder(str(i), "1", now=T0 + timedelta(minutes=i)), keep_runs=1)
    last = run_folder("2", "1", now=T0 + timedelta(minutes=2))
    assert set(gh.state.files("sdopt-assets")) == {
        "README.md", f"{last}/00-difference.webp", f"{last}/00-original.webp"}


def test_pruning_never_deletes_a_folder_by_a_null_sha(gh):
    """GitHub documents a null sha as deleting a *file*; the API transport lists the top level
    it keeps instead (no base_tree, so a pruned folder is simply not in the new tree), and the
    other entries (a nested file, a symlink, a file) survive with their modes and objects."""
    st = gh.state
    blob, link = st.put_blob(b"readme"), st.put_blob(b"README.md")
    st.refs["refs/heads/sdopt-assets"] = st.put_commit(st.build({
        "README.md": ("100644", blob), "latest": ("120000", link),
        "notes/keep.md": ("100644", blob)}), [], "by hand")
    folders = [run_folder(str(i), "1", now=T0 + timedelta(minutes=i)) for i in range(3)]
    for f in folders:
        publish(gh, f, keep_runs=1)
    assert st.flat(st.commits[st.refs["refs/heads/sdopt-assets"]]["tree"]) == {
        "README.md": ("100644", blob), "latest": ("120000", link),
        "notes/keep.md": ("100644", blob),
        f"{folders[2]}/00-original.webp": ("100644", st.put_blob(b"RIFF" + folders[2].encode())),
        f"{folders[2]}/00-difference.webp":
            ("100644", st.put_blob(b"RIFF-d" + folders[2].encode()))}


def test_a_truncated_top_level_listing_is_refused_in_one_line(gh):
    """GitHub truncates a tree listing past its limits; the API transport rebuilds the whole
    top level from that listing, so a truncated one would delete what it did not list: refused,
    the branch left as it was."""
    publish(gh, run_folder("1", "1", now=T0))
    head = gh.state.refs["refs/heads/sdopt-assets"]
    gh.state.trees_truncated = True
    with pytest.raises(PublishError, match="truncated") as info:
        publish(gh, run_folder("2", "1", now=T0 + timedelta(minutes=1)))
    assert "\n" not in str(info.value) and gh.state.refs["refs/heads/sdopt-assets"] == head


def test_read_only_token_says_why_in_one_line(gh):
    with pytest.raises(PublishError, match="403.*contents: write") as info:
        publish(gh, run_folder("1", "1", now=T0), token="ro")
    assert "\n" not in str(info.value) and "ro" not in gh.state.refs


def test_empty_repository_and_lasting_conflicts_give_up(gh):
    gh.state.git_empty = True
    with pytest.raises(PublishError, match="409.*Git Repository is empty"):
        publish(gh, run_folder("1", "1", now=T0))


def test_names_that_are_not_ours_are_refused_before_any_request(gh):
    with pytest.raises(PublishError, match="not a thumbnail name"):
        publish_images([Thumbnail("../../README.md", "original", b"x")], token="rw",
                       repository=REPO, folder=run_folder("1", "1", now=T0), api_url=gh.url)
    with pytest.raises(PublishError, match="not a run folder"):
        publish_images(files(), token="rw", repository=REPO, folder="../main", api_url=gh.url)
    assert gh.state.requests == []


@pytest.mark.parametrize("name", ["", "-x", "a..b", "a b", "x.lock", "main;rm", "/abs", "a//b"])
def test_bad_branch_names_are_bad_input(name):
    with pytest.raises(SdoptError, match="assets_branch"):
        check_branch(name)


def test_a_branch_that_keeps_moving_gives_up_after_a_few_attempts(gh):
    from action.assets import ATTEMPTS

    publish(gh, run_folder("1", "1", now=T0))

    def always_first(state):
        head = state.refs["refs/heads/sdopt-assets"]
        state.refs["refs/heads/sdopt-assets"] = state.put_commit(
            state.commits[head]["tree"], [head], "someone else")
        state.before_ref_write.append(always_first)

    gh.state.before_ref_write.append(always_first)
    with pytest.raises(PublishError, match="422.*not a fast forward"):
        publish(gh, run_folder("2", "1", now=T0 + timedelta(minutes=1)))
    patches = [r for r in gh.state.requests if r[0] == "PATCH"]
    assert len(patches) == ATTEMPTS


def test_the_fakes_blob_names_are_gits_own(gh, tmp_path):
    """The stand-in's object store names blobs as git does, so a published file is the object
    a clone of the branch holds (checked with the real git binary)."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = publish(gh, run_folder("1", "1", now=T0))
    tree = gh.state.commits[done.commit]["tree"]
    for path, (_, sha) in gh.state.flat(tree).items():
        (tmp_path / "f").write_bytes(gh.state.blobs[sha])
        real = subprocess.run(["git", "hash-object", str(tmp_path / "f")], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert real == sha, path


def test_a_long_comment_key_still_names_a_folder():
    folder = run_folder("7", "2", "leg-" + "x" * 200, now=T0)
    assert folder.startswith("20261130T120000Z-7-2-leg-") and len(folder) < 100


def test_folders_older_than_keep_days_are_pruned_too(gh):
    old = run_folder("1", "1", now=T0 - timedelta(days=10))
    recent = run_folder("2", "1", now=T0 - timedelta(days=2))
    for f in (old, recent):
        publish(gh, f)
    mine = run_folder("3", "1", now=T0)
    done = publish(gh, mine, keep_days=7, now=T0)
    assert done.pruned == [old]
    assert {p.split("/")[0] for p in gh.state.files("sdopt-assets")} == {recent, mine}
