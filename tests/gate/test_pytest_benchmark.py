"""The pytest-benchmark export against pytest-benchmark 5.3.1 itself and github-action-benchmark's
parser: two real ``sdopt bench`` runs of the tiny model in a git repository, added to a
pytest-benchmark storage; pytest-benchmark's own ``list`` and ``compare`` read them with no
paths and print the medians and IQRs sdopt printed."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdopt.cli import main
from sdopt.gate.pytest_benchmark import (PYTEST_BENCHMARK_VERSION, machine_id, machine_info,
                                         pytest_benchmark_json, save_to_storage)
from sdopt.gate.results import PYTEST_BENCHMARK_NAME, read_results
from sdopt.report import fmt
from tests.tiny_config import tiny_config

PYTEST_BENCHMARK = str(Path(sys.executable).with_name("pytest-benchmark"))
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A repository (remote origin octo/widgets) with the config in a subfolder, benched twice
    into one storage; a user's own pytest-benchmark run was in the storage first."""
    repo = tmp_path_factory.mktemp("widgets")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://github.com/octo/widgets.git")
    (repo / "gates").mkdir()
    (repo / "gates" / "sdopt.toml").write_text(
        tiny_config(runs=5, candidate="torch_eager/fp32")
        .replace('variants = ["optimized"]', 'variants = ["original", "optimized"]')
        .replace("warmup = 1\n", "warmup = 1\nthreads = 1\n"))
    (repo / ".gitignore").write_text("out*/\n.benchmarks/\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "gate")
    storage = repo / ".benchmarks"
    users = storage / machine_id()
    users.mkdir(parents=True)
    (users / "0001_users-own-run.json").write_text('{"benchmarks": []}')
    outputs = []
    for i in (1, 2):
        out = repo / f"out{i}"
        result = CliRunner().invoke(main, ["bench", "--config", str(repo / "gates" / "sdopt.toml"),
                                           "--out", str(out), "--quiet",
                                           "--pytest-benchmark-storage", str(storage)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append((out, result.output))
    return repo, storage, outputs


def _cli(repo: Path, *args: str) -> str:
    proc = subprocess.run([PYTEST_BENCHMARK, *args], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_runs_land_in_the_storage_as_autosave_names_them_next_to_the_users_own(project):
    repo, storage, outputs = project
    head = _git(repo, "rev-parse", "HEAD")
    files = sorted(p.name for p in (storage / machine_id()).iterdir())
    assert files[0] == "0001_users-own-run.json"
    # anchored at the end: a commit hash that ends in 8 digits once matched the pattern first
    assert [re.sub(r"\d{8}_\d{6}\.json$", "TIME.json", f) for f in files[1:]] == \
        [f"0002_{head}_TIME.json", f"0003_{head}_TIME.json"]
    for (out, output), name in zip(outputs, files[1:]):
        assert f"pytest-benchmark storage: {storage / machine_id() / name}" in output
        assert json.loads((storage / machine_id() / name).read_text()) == \
            json.loads((out / PYTEST_BENCHMARK_NAME).read_text())
    listed = _cli(repo, "--storage", str(storage), "list").split()
    assert [Path(p).name for p in listed] == files


def test_compare_with_no_paths_prints_sdopts_medians_and_iqrs(project, tmp_path):
    repo, storage, outputs = project
    table = _cli(repo, "--storage", str(storage), "compare", "--columns", "median,iqr,rounds",
                 "--time-unit", "ms", "--csv", str(tmp_path / "compare.csv"))
    rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert len(rows) == 4  # two variants of two runs (the user's empty run adds none)
    for out, output in outputs:
        results = read_results(out)
        report = tmp_path / f"{out.name}.md"
        result = CliRunner().invoke(main, ["report", str(out), "--markdown", str(report)])
        assert result.exit_code == 0, result.output
        report_text = report.read_text(encoding="utf-8")
        for name, variant in results["variants"].items():
            lat = variant["latency_s"]
            fullname = f"gates/sdopt.toml::sdopt[tiny-64x64-2steps-{name}-cpu]"
            matches = [r for r in rows if r["name"] == fullname
                       and float(r["median"]) == lat["median"]]
            assert matches, (fullname, rows)
            assert float(matches[0]["iqr"]) == lat["iqr"]
            assert int(matches[0]["rounds"]) == len(lat["samples"]) == 5
            # The same numbers in pytest-benchmark's table and in sdopt's own lines.
            assert f"{lat['median'] * 1e3:,.4f}" in table
            assert f"{lat['iqr'] * 1e3:,.4f}" in table
            assert f"{name:9} {variant['label']}: {lat['median'] * 1e3:.1f} ms/image median " \
                   f"(IQR {lat['iqr'] * 1e3:.1f} ms" in output
            # sdopt's report shows what pytest-benchmark computed: its median ± IQR, formatted.
            shown = f"{fmt.seconds(float(matches[0]['median']))} ± " \
                    f"{fmt.seconds(float(matches[0]['iqr']))}"
            assert shown in report_text, (shown, report_text[:2000])


def test_the_document_follows_pytest_benchmark_531(project):
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.stats import Stats

    repo, _, outputs = project
    data = json.loads((outputs[0][0] / PYTEST_BENCHMARK_NAME).read_text())
    assert data["version"] == PYTEST_BENCHMARK_VERSION
    assert set(pytest_benchmark_generate_machine_info()) <= set(data["machine_info"])
    assert data["machine_info"]["sdopt_device"]["kind"] == "cpu"
    assert data["commit_info"] == {"id": _git(repo, "rev-parse", "HEAD"),
                                   "time": _git(repo, "show", "-s", "--pretty=format:%cI"),
                                   "author_time": _git(repo, "show", "-s", "--pretty=format:%aI"),
                                   "dirty": False, "project": "widgets", "branch": "main"}
    fields = {"group", "name", "fullname", "params", "param", "extra_info", "options", "stats"}
    for bench in data["benchmarks"]:
        assert set(bench) == fields
        samples = bench["stats"]["data"]
        reference = Stats()
        for value in samples:
            reference.update(value)
        assert bench["stats"] == {**reference.as_dict(), "data": samples, "iterations": 1}
        options = bench["options"]
        assert set(options) == {"disable_gc", "timer", "min_rounds", "max_time", "min_time",
                                "precision", "confidence", "warmup"}
        assert options["min_rounds"] == bench["stats"]["rounds"] == len(samples)
        assert options["max_time"] == 0.0 and options["warmup"] == 1
        assert bench["name"] == f"sdopt[{bench['param']}]"
        assert bench["fullname"] == f"gates/sdopt.toml::{bench['name']}"


def _github_action_benchmark(text: str) -> list[dict]:
    """extractPytestResult of benchmark-action/github-action-benchmark (src/extract.ts at
    04dcc2c): the fields it reads and what it makes of them."""
    def readable(seconds):
        for limit, scale, unit in ((1e-6, 1e9, "nsec"), (1e-3, 1e6, "usec"), (1.0, 1e3, "msec")):
            if seconds < limit:
                return seconds * scale, unit
        return seconds, "sec"

    out = []
    for bench in json.loads(text)["benchmarks"]:
        stats = bench["stats"]
        mean, unit = readable(stats["mean"])
        out.append({"name": bench["fullname"], "value": stats["ops"], "unit": "iter/sec",
                    "range": f"stddev: {stats['stddev']}",
                    "extra": f"mean: {mean} {unit}\nrounds: {stats['rounds']}"})
    return out


def test_github_action_benchmark_reads_one_series_per_config_model_size_variant(project):
    _, _, outputs = project
    text = (outputs[0][0] / PYTEST_BENCHMARK_NAME).read_text()
    benches = _github_action_benchmark(text)
    results = read_results(outputs[0][0])
    assert [b["name"] for b in benches] == \
        [f"gates/sdopt.toml::sdopt[tiny-64x64-2steps-{n}-cpu]" for n in results["variants"]]
    for bench, variant in zip(benches, results["variants"].values()):
        assert isinstance(bench["value"], float) and math.isfinite(bench["value"])
        assert bench["value"] == pytest.approx(1 / variant["latency_s"]["mean"])
        assert bench["extra"].endswith("rounds: 5")
    # The next run of the same config keeps the series' names; another size or config does not
    # collide with them (the old export named every benchmark sdopt.toml::sdopt[optimized]).
    again = _github_action_benchmark((outputs[1][0] / PYTEST_BENCHMARK_NAME).read_text())
    assert [b["name"] for b in again] == [b["name"] for b in benches]
    bigger = dict(results, config=dict(results["config"], height=128, width=128))
    names = {b["name"] for b in benches}
    for doc, path in ((bigger, "gates/sdopt.toml"), (results, "gates/other.toml")):
        others = {b["fullname"] for b in pytest_benchmark_json(doc, config_path=path)["benchmarks"]}
        assert not names & others


def test_a_storage_that_is_a_file_or_a_link_is_one_error_line(tmp_path):
    config = tmp_path / "sdopt.toml"
    config.write_text(tiny_config(candidate="torch_eager/fp32"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    for storage, why in (("file", "is a file"), ("link", "symbolic link")):
        result = CliRunner().invoke(main, ["bench", "--config", str(config), "--out",
                                           str(tmp_path / "out"), "--pytest-benchmark-storage",
                                           str(tmp_path / storage)])
        assert result.exit_code == 2 and why in result.output, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")
        assert not (tmp_path / "out").exists()  # refused before any benchmarking


def test_outside_a_repository_the_commit_is_unversioned(tmp_path):
    results = read_results(Path(__file__).parents[1] / "data" / "report" / "current")
    document = pytest_benchmark_json(results, repo=tmp_path)
    assert document["commit_info"]["id"] == "unversioned"
    assert document["commit_info"]["project"] == tmp_path.name
    path = save_to_storage(document, tmp_path / "storage")
    assert re.fullmatch(r"0001_unversioned_\d{8}_\d{6}\.json", path.name)
    assert machine_info()["python_version"]
