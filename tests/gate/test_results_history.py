"""The results history (sdopt/gate/results_history.py): one file per run, written once, bounded,
only in a directory sdopt made, and every file validated when read back (a cache others can
write brings it back). Runs are recorded results documents with other times and medians."""

from __future__ import annotations

import copy
import datetime
import json
import os
from pathlib import Path

import pytest

from sdopt.errors import SdoptError
from sdopt.gate.results import read_results
from sdopt.gate.results_history import (ENTRY_NAME, MAX_ENTRY_BYTES, RUN_HISTORY_OUTPUT, add_run,
                                        add_results, entry_files, entry_for, read_runs,
                                        runs_like)
from sdopt.store import create_new_text, marker_kind

DATA = Path(__file__).parents[1] / "data" / "report"
COMMIT = {"id": "a" * 40, "time": "2026-11-30T10:00:00+00:00", "dirty": False,
          "project": "widgets", "branch": "main"}


def run(i: int, *, slower: float = 1.0, height: int | None = None) -> dict:
    """The recorded results with run ``i``'s time (a day apart) and medians."""
    doc = copy.deepcopy(read_results(DATA / "current"))
    doc["created_unix"] = 1_780_000_000 + i * 86_400
    for v in doc["variants"].values():
        v["latency_s"]["median"] *= slower * (1 + 0.01 * (i % 3))
    if height is not None:
        doc["config"]["height"] = height
    return doc


def test_a_run_is_one_new_file_in_a_directory_sdopt_marks(tmp_path):
    history = tmp_path / "history"
    path, pruned = add_run(history, entry_for(run(0), commit=COMMIT,
                                              verdict={"verdict": "pass"}))
    assert pruned == [] and path.parent == history and ENTRY_NAME.fullmatch(path.name)
    added = datetime.datetime.strptime(path.name.split("_")[0], "%Y%m%dT%H%M%S.%fZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - added).total_seconds()) < 60 and "_aaaaaaaaaaaa_" in path.name
    assert marker_kind(history) == RUN_HISTORY_OUTPUT
    (entry,) = read_runs(history)
    assert entry["commit"]["id"] == "a" * 40 and entry["verdict"] == "pass"
    assert entry["medians_s"]["optimized"] == run(0)["variants"]["optimized"]["latency_s"]["median"]
    assert set(entry["iqr_s"]) == set(run(0)["variants"]) and entry["speedup"] > 0
    # Another run: a second file, the first left as it was.
    before = path.read_bytes()
    add_run(history, entry_for(run(1), commit=COMMIT))
    assert len(entry_files(history)) == 2 and path.read_bytes() == before


def test_an_entry_file_is_never_replaced(tmp_path):
    target = tmp_path / "x.json"
    create_new_text(target, "one")
    with pytest.raises(FileExistsError):
        create_new_text(target, "two")
    assert target.read_text() == "one" and sorted(os.listdir(tmp_path)) == ["x.json"]


def test_the_history_is_bounded_and_only_sdopt_entries_are_deleted(tmp_path):
    history = tmp_path / "history"
    for i in range(5):
        _, pruned = add_run(history, entry_for(run(i), commit=COMMIT), max_runs=3)
    notes = history / "README.md"
    notes.write_text("the user's own file")
    _, pruned = add_run(history, entry_for(run(5), commit=COMMIT), max_runs=3)
    assert len(pruned) == 1
    runs = read_runs(history)
    assert [r["created_unix"] for r in runs] == [run(i)["created_unix"] for i in (3, 4, 5)]
    assert notes.read_text() == "the user's own file"
    assert [r["created_unix"] for r in read_runs(history, last=2)] == \
        [run(i)["created_unix"] for i in (4, 5)]
    with pytest.raises(SdoptError, match="--max-runs is 0"):
        add_run(history, entry_for(run(6), commit=COMMIT), max_runs=0)


def test_directories_sdopt_did_not_make_are_refused(tmp_path):
    entry = entry_for(run(0), commit=COMMIT)
    mine = tmp_path / "src"
    mine.mkdir()
    (mine / "main.py").write_text("print()")
    with pytest.raises(SdoptError, match="not written by 'sdopt history add'.*no .sdopt-output"):
        add_run(mine, entry)
    assert os.listdir(mine) == ["main.py"]
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(SdoptError, match="symbolic link"):
        add_run(link, entry)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(SdoptError, match="is a file"):
        read_runs(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    add_run(empty, entry)  # an empty directory becomes a history
    assert marker_kind(empty) == RUN_HISTORY_OUTPUT
    assert read_runs(tmp_path / "not-yet") == []


def test_hostile_entries_are_one_error_line_naming_the_file_and_field(tmp_path):
    history = tmp_path / "history"
    path, _ = add_run(history, entry_for(run(0), commit=COMMIT))
    data = json.loads(path.read_text())
    data["medians_s"]["optimized"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(SdoptError) as err:
        read_runs(history)
    assert str(path) in str(err.value) and "medians_s.optimized" in str(err.value)
    assert "\n" not in str(err.value)
    path.write_text(" " * (MAX_ENTRY_BYTES + 1))
    with pytest.raises(SdoptError, match="refused unread"):
        read_runs(history)
    path.unlink()
    path.symlink_to("/etc/passwd")
    with pytest.raises(SdoptError, match="not a regular file"):
        read_runs(history)


def test_a_trend_compares_only_the_same_machine_and_workload(tmp_path):
    history = tmp_path / "history"
    for i in range(3):
        add_run(history, entry_for(run(i), commit=COMMIT))
    add_run(history, entry_for(run(3, height=512), commit=COMMIT))
    runs = read_runs(history)
    assert len(runs) == 4 and len(runs_like(runs, run(9))) == 3


def _with_images(doc: dict, start: list, mask: list | None = None) -> dict:
    doc["config"]["start_image_sha256"] = start
    doc["config"]["mask_image_sha256"] = mask or [None] * len(start)
    return doc


def test_runs_on_other_start_images_are_another_trend(tmp_path):
    """#18: results.json records the start images' and masks' hashes; runs made from other
    pictures are not one series (compare refuses them too), in the results history and in the
    baseline's history. Runs without given images keep the workload they had before."""
    from sdopt.gate.history import run_summary, with_run

    cat, dog = "c" * 64, "d" * 64
    history = tmp_path / "history"
    add_run(history, entry_for(run(0), commit=COMMIT))  # text-to-image, or default images only
    add_run(history, entry_for(_with_images(run(1), [None, None]), commit=COMMIT))
    for i in (2, 3):
        add_run(history, entry_for(_with_images(run(i), [cat, None]), commit=COMMIT))
    add_run(history, entry_for(_with_images(run(4), [dog, None]), commit=COMMIT))
    add_run(history, entry_for(_with_images(run(5), [cat, None], [None, dog]), commit=COMMIT))
    runs = read_runs(history)
    assert len(runs) == 6
    # Only default images: the workload of a run that records none (as written before #18).
    assert "start_image_sha256" not in runs[0]["workload"]
    assert runs[1]["workload"] == runs[0]["workload"]
    assert len(runs_like(runs, run(9))) == 2
    same_cat = runs_like(runs, _with_images(run(9), [cat, None]))
    assert [r["created_unix"] for r in same_cat] == [runs[2]["created_unix"],
                                                    runs[3]["created_unix"]]
    assert same_cat[0]["workload"]["start_image_sha256"] == [cat[:16], None]
    assert len(runs_like(runs, _with_images(run(9), [dog, None]))) == 1
    assert len(runs_like(runs, _with_images(run(9), [cat, None], [None, dog]))) == 1
    # The baseline's history keeps only the runs of the new run's pictures.
    baseline_runs = [run_summary(_with_images(run(i), [cat, None])) for i in range(2)]
    kept = with_run(baseline_runs, _with_images(run(2), [dog, None]))
    assert len(kept) == 1 and kept[0]["workload"]["start_image_sha256"] == [dog[:16], None]


def test_the_trend_chart_draws_only_runs_of_the_same_start_images(tmp_path):
    from sdopt.report.context import history_points

    cat, dog = "c" * 64, "d" * 64
    history = [_with_images(run(i), [cat]) for i in range(3)] + [
        _with_images(run(i), [dog]) for i in range(3, 5)]
    points = history_points(_with_images(run(9), [dog]), None, history)
    assert [p["role"] for p in points] == ["history", "history", "current"]


def test_the_commit_is_read_from_git_as_pytest_benchmark_reads_it(tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://github.com/octo/widgets.git"],
                   cwd=repo, check=True)
    (repo / "sdopt.toml").write_text('model = "tiny"\n')
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    path, _ = add_results(tmp_path / "history", run(0), repo=repo)
    commit = read_runs(tmp_path / "history")[0]["commit"]
    assert commit["id"] == head and commit["branch"] == "main" and commit["dirty"] is False
    assert commit["project"] == "widgets" and commit["time"].startswith("20")
    assert head[:12] in path.name
