"""Hostile input from a pull request (issue #15): an ``sdopt.toml`` whose paths point at the
repository or outside it, and results files with out-of-range fields. Each is one error line and
exit 2, and nothing sdopt did not make is deleted or replaced (real tiny-preset bench, real git
repository, real files)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from sdopt.cli import main
from sdopt.store import MARKER_NAME

BENCH = ('[bench]\nprompts = ["a photo of a cat"]\nseeds = [0]\nsteps = 2\nruns = 2\n'
         'threads = 1\nvariants = ["optimized"]\n[optimize]\ncandidate = "torch_eager/fp32"\n')


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def one_line_error(code, out):
    assert code == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


def _tree(path):
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else b"")
                  for p in path.rglob("*"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repository with a model folder, a config and a real results directory."""
    from sdopt.models import save_preset

    top = tmp_path_factory.mktemp("hostile")
    repo = top / "repo"
    save_preset("tiny", repo / "model")
    (repo / "sdopt.toml").write_text('model = "model"\noutput_dir = "out"\n' + BENCH)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    code, out = run("bench", "--config", repo / "sdopt.toml", "--quiet")
    assert code == 0, out
    victim = top / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("not sdopt's")
    return repo, victim


def _config(repo, name, text):
    path = repo / name
    path.write_text('model = "model"\n' + text + BENCH)
    return path


@pytest.mark.parametrize("command", ["bench", "gate"])
@pytest.mark.parametrize("output_dir, why", [
    ("../victim", "not written by sdopt"), (".", "is or contains"), ("..", "is or contains"),
    ("model", "another kind of sdopt output"),  # the model folder sdopt's save_preset wrote
])
def test_a_hostile_output_dir_deletes_nothing(project, command, output_dir, why):
    repo, victim = project
    before_repo, before_victim = _tree(repo), _tree(victim)
    config = _config(repo, f"hostile-{command}.toml", f'output_dir = "{output_dir}"\n'
                     '[baseline]\npath = "out"\n')
    try:
        line = one_line_error(*run(command, "--config", config, "--overwrite", "--quiet"))
    finally:
        config.unlink()
    assert why in line, line
    assert _tree(repo) == [e for e in before_repo if not e[0].startswith("hostile-")]
    assert _tree(victim) == before_victim


@pytest.mark.parametrize("path", [".", "..", "../victim"])
def test_a_hostile_baseline_path_is_never_replaced(project, path):
    repo, victim = project
    before_repo, before_victim = _tree(repo), _tree(victim)
    config = _config(repo, "hostile-baseline.toml", f'[baseline]\npath = "{path}"\n')
    try:
        line = one_line_error(*run("baseline", "save", "--config", config, "--results",
                                   repo / "out", "--update-baseline"))
    finally:
        config.unlink()
    assert "not written by sdopt" in line or "is or contains" in line, line
    assert _tree(repo) == [e for e in before_repo if not e[0].startswith("hostile-")]
    assert _tree(victim) == before_victim


def test_update_baseline_replaces_its_own_and_an_older_sdopts(project, tmp_path):
    repo, _ = project
    baseline = tmp_path / "baseline"
    code, out = run("baseline", "save", "--config", repo / "sdopt.toml", "--results",
                    repo / "out", "--to", baseline)
    assert code == 0 and (baseline / MARKER_NAME).is_file(), out
    (baseline / MARKER_NAME).unlink()  # as a baseline committed before the marker existed
    code, out = run("baseline", "save", "--config", repo / "sdopt.toml", "--results",
                    repo / "out", "--to", baseline, "--update-baseline")
    assert code == 0 and (baseline / MARKER_NAME).is_file(), out


def test_reproduce_overwrite_refuses_a_folder_sdopt_did_not_write(project):
    """Refused before any image is built or daemon contacted (none is needed to see it)."""
    repo, _ = project
    victim = repo / "docs"
    victim.mkdir(exist_ok=True)
    (victim / "index.md").write_text("the user's")
    before = _tree(victim)
    line = one_line_error(*run("reproduce", "--config", repo / "sdopt.toml", "--out", victim,
                               "--overwrite"))
    assert "not written by sdopt" in line and _tree(victim) == before
    line = one_line_error(*run("reproduce", "--config", repo / "sdopt.toml", "--out", repo,
                               "--overwrite"))
    assert "is or contains" in line and (repo / "sdopt.toml").is_file()


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(created_unix=1e20), "created_unix"),
    (lambda d: d["variants"]["optimized"]["stages_s"].update(unet="fast"),
     "variants.optimized.stages_s.unet"),
    (lambda d: d["config"].update(seeds=[2 ** 64]), "config.seeds.0"),
    (lambda d: d["variants"]["optimized"]["images"][0].update(seed=2 ** 64 + 5),
     "variants.optimized.images.0.seed"),
    (lambda d: d["config"].update(runs=True), "config.runs"),
    (lambda d: d["config"].update(guidance_scale=float("inf")), "config.guidance_scale"),
    (lambda d: d["config"].update(height=8000000), "config.height"),
    (lambda d: d["variants"]["optimized"]["latency_s"].update(median=1e300),
     "variants.optimized.latency_s.median"),
])
def test_hostile_results_fields_are_one_line_exit_2(project, tmp_path, edit, field):
    repo, _ = project
    forged = tmp_path / "forged"
    shutil.copytree(repo / "out", forged)
    data = json.loads((forged / "results.json").read_text())
    edit(data)
    (forged / "results.json").write_text(json.dumps(data))
    for args in (("compare", repo / "out", forged), ("compare", forged, repo / "out")):
        line = one_line_error(*run(*args))
        assert f"field '{field}'" in line, line


@pytest.mark.parametrize("setting, field", [
    ("bench.runs = true", "bench.runs"), ("bench.guidance_scale = inf", "bench.guidance_scale"),
    ("bench.height = 8000000", "bench.height"), ("bench.seeds = [18446744073709551616]",
                                                  "bench.seeds.0"),
    ("bench.steps = 2.0", "bench.steps"), ("gate.latency_tolerance = nan",
                                           "gate.latency_tolerance"),
])
def test_hostile_config_values_are_one_line_exit_2(project, tmp_path, setting, field):
    repo, _ = project
    section, assignment = setting.split(".", 1)
    config = tmp_path / "sdopt.toml"
    config.write_text(f'model = "tiny"\n[{section}]\n{assignment}\n')
    line = one_line_error(*run("bench", "--config", config, "--out", tmp_path / "o"))
    assert f"field '{field}'" in line and not (tmp_path / "o").exists(), line
    line = one_line_error(*run("bench", "--config", repo / "sdopt.toml", "--set",
                               setting.replace(" ", ""), "--out", tmp_path / "o"))
    assert f"field '{field}'" in line and "--set" in line, line


def test_a_bench_output_is_readable_by_another_user(project, tmp_path):
    """What a root container writes, a later step as uid 1001 reads (upload-artifact): umask
    modes, not mkstemp's 0600/0700, on every file and folder (issue #15)."""
    import os

    repo, _ = project
    saved = os.umask(0o022)
    try:
        code, out = run("baseline", "save", "--config", repo / "sdopt.toml", "--results",
                        repo / "out", "--to", tmp_path / "baseline")
    finally:
        os.umask(saved)
    assert code == 0, out
    for top in (repo / "out", tmp_path / "baseline"):
        for path in [top, *top.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
