"""``sdopt bench / baseline save / compare / gate`` end to end on the tiny preset, with real
timings: the regression case is made slower for real (more denoising steps), never faked."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sdopt.cli import main

# One torch thread: on a busy shared 2-core machine it is far steadier than two.
BENCH = ('[bench]\nprompts = ["a photo of a cat"]\nseeds = [0]\nsteps = {steps}\nruns = 6\n'
         'threads = 1\nvariants = ["optimized"]\n')


def _write_config(root, steps=2, gate="latency_tolerance = 0.5\n", extra=""):
    root.mkdir(parents=True, exist_ok=True)
    text = ('model = "model"\noutput_dir = "out"\n' + BENCH.format(steps=steps)
            + '[optimize]\ncandidate = "torch_eager/fp32"\n[gate]\n' + gate + extra)
    (root / "sdopt.toml").write_text(text)
    return root / "sdopt.toml"


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)
    return result.exit_code, result.output


def run_json(*args):
    """(status, stdout, stderr) of a --json run: stdout must be the verdict alone."""
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user repository with a diffusers model folder, a config and a saved baseline."""
    from sdopt.models import save_preset

    root = tmp_path_factory.mktemp("project")
    save_preset("tiny", root / "model")
    config = _write_config(root)
    code, out = run("bench", "--config", config, "--quiet")
    assert code == 0, out
    code, out = run("baseline", "save", "--config", config, "--results", root / "out")
    assert code == 0 and "baseline saved" in out and "history: 1 run(s)" in out, out
    return root


def test_gate_passes_against_its_own_baseline(project, tmp_path):
    code, out = run("gate", "--config", project / "sdopt.toml", "--out", tmp_path / "g", "--quiet")
    assert code == 0, out
    verdict = json.loads((tmp_path / "g" / "verdict.json").read_text())
    assert verdict["verdict"] == "pass" and not verdict["quality"]["regressed"]
    assert all(i["psnr_db"] is None for i in verdict["quality"]["images"])  # identical
    for name in ("results.json", "results.pytest-benchmark.json", "images/optimized/0.png"):
        assert (tmp_path / "g" / name).is_file()
    assert "sdopt gate: PASS" in out
    import jsonschema
    from importlib import resources

    schema = json.loads(resources.files("sdopt").joinpath("schemas/verdict.schema.json").read_text())
    jsonschema.validate(verdict, schema, cls=jsonschema.Draft202012Validator)


def test_gate_flags_a_really_slower_run(project, tmp_path):
    """Eight times the denoising steps of the baseline's run: a real slowdown (and new pixels),
    large enough to stand out even when the baseline was measured on a busier machine."""
    slow = tmp_path / "slow"
    shutil.copytree(project / "model", slow / "model")
    config = _write_config(slow, steps=16, extra='[baseline]\npath = "{}"\n'.format(
        (project / ".sdopt" / "baseline").as_posix()))
    code, out = run("gate", "--config", config, "--quiet")
    assert code == 1, out
    verdict = json.loads((slow / "out" / "verdict.json").read_text())
    assert verdict["verdict"] == "regression"
    assert verdict["latency"]["regressed"], verdict["latency"]
    assert verdict["latency"]["test"] == "mann-whitney-u"
    assert any("steps changed" in r for r in verdict["reasons"])


def test_compare_flags_a_corrupted_image_and_passes_an_identical_rerun(project, tmp_path):
    baseline = project / ".sdopt" / "baseline"
    code, printed, human = run_json("compare", baseline, project / "out", "--out", tmp_path / "v")
    assert code == 0, human
    assert printed == json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert printed["verdict"] == "pass" and "sdopt gate: PASS" in human
    corrupted = tmp_path / "corrupted"
    shutil.copytree(project / "out", corrupted)
    png = corrupted / "images" / "optimized" / "0.png"
    pixels = np.asarray(Image.open(png), dtype=np.float64)
    noisy = pixels + np.random.default_rng(0).normal(0, 20, pixels.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(png)
    assert "--overwrite" in _one_error_line(*run("compare", baseline, corrupted, "--out",
                                                 tmp_path / "v"))
    code, out = run("compare", baseline, corrupted, "--out", tmp_path / "v", "--overwrite")
    assert code == 1, out
    verdict = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert verdict["quality"]["regressed"] and not verdict["latency"]["regressed"]
    assert "quality regression" in out


def test_compare_reads_the_baseline_committed_on_a_git_ref(project, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    shutil.copytree(project / ".sdopt", repo / ".sdopt")
    (repo / "sdopt.toml").write_text((project / "sdopt.toml").read_text())
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "baseline"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)
    shutil.rmtree(repo / ".sdopt")  # only the commit has it now
    code, out = run("compare", "git:main:.sdopt/baseline", project / "out", "--config",
                    repo / "sdopt.toml", "--out", tmp_path / "v")
    assert code == 0, out
    assert json.loads((tmp_path / "v" / "verdict.json").read_text())["baseline"]["source"] == \
        "git:main:.sdopt/baseline"
    line = _one_error_line(*run("compare", "git:nope:.sdopt/baseline", project / "out",
                                "--config", repo / "sdopt.toml"))
    assert "cannot be read from git" in line


def test_results_from_another_machine_are_not_comparable(project, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(project / "out", other)
    data = json.loads((other / "results.json").read_text())
    data["environment"]["device"]["name"] = "Some Other CPU"
    (other / "results.json").write_text(json.dumps(data))
    before = sorted(p.name for p in other.iterdir())
    code, out = run("compare", project / ".sdopt" / "baseline", other, "--out", tmp_path / "v")
    assert code == 3, out  # not comparable: neither a regression nor bad input
    line = _only_line(out)
    assert "not comparable" in line and "another machine" in line and "Some Other CPU" in line
    assert json.loads((tmp_path / "v" / "verdict.json").read_text())["verdict"] == "not_comparable"
    assert sorted(p.name for p in other.iterdir()) == before  # nothing of the user's touched
    code, printed, _ = run_json("compare", project / ".sdopt" / "baseline", other)
    assert code == 3 and printed["verdict"] == "not_comparable"
    code, out = run("compare", project / ".sdopt" / "baseline", other, "--allow-other-machine")
    assert code == 0, out
    # The same, from the environment (SDOPT_<COMMAND>_<OPTION>).
    code, out = run("compare", project / ".sdopt" / "baseline", other,
                    env={"SDOPT_COMPARE_ALLOW_OTHER_MACHINE": "1"})
    assert code == 0 and "compared anyway" in out, out


def test_overrides_and_threshold_shortcuts_reach_the_verdict(project, tmp_path):
    baseline = project / ".sdopt" / "baseline"
    code, verdict, _ = run_json("compare", baseline, project / "out", "--set",
                                "gate.latency_tolerance=0.25", "--ssim-min", "0.5")
    assert code == 0 and verdict["latency"]["tolerance"] == 0.25
    # The shortcut and --set are one thing: --set given later wins.
    code, verdict, _ = run_json("compare", baseline, project / "out", "--latency-tolerance", "0.3",
                                "--set", "gate.latency_tolerance=0.4", "--config",
                                project / "sdopt.toml")
    assert code == 0 and verdict["latency"]["tolerance"] == 0.4
    line = _one_error_line(*run("compare", baseline, project / "out", "--ssim-min", "2"))
    assert "gate.ssim_min" in line and "--ssim-min 2" in line
    line = _one_error_line(*run("compare", baseline, project / "out", "--set", "bench.runs=3"))
    assert "only gate.* settings" in line
    line = _one_error_line(*run("bench", "--config", project / "sdopt.toml", "--set",
                                "gate.tolerance=0.1", "--out", tmp_path / "b"))
    assert "unknown field 'gate.tolerance'" in line and "--set 'gate.tolerance=0.1'" in line
    assert not (tmp_path / "b").exists()


def _only_line(out):
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def _one_error_line(code, out):
    assert code == 2, out
    return _only_line(out)


def test_bad_inputs_are_one_line_exit_2_and_overwrite_nothing(project, tmp_path):
    baseline = project / ".sdopt" / "baseline"
    before = (baseline / "results.json").read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "tiny"\n[bench\n')
    assert "not valid TOML" in _one_error_line(*run("bench", "--config", bad))
    bad.write_text('model = "tiny"\n[gate]\ntolerance = 0.1\n')
    assert "unknown field 'gate.tolerance'" in _one_error_line(*run("gate", "--config", bad))
    line = _one_error_line(*run("compare", tmp_path / "no-baseline", project / "out"))
    assert "baseline" in line and "not found" in line
    old = tmp_path / "old-baseline"
    shutil.copytree(baseline, old)
    data = json.loads((old / "results.json").read_text())
    (old / "results.json").write_text(json.dumps(dict(data, schema_version=99)))
    assert "schema_version is 99" in _one_error_line(*run("compare", old, project / "out"))
    # A gate whose baseline is missing fails before benchmarking and writes nothing.
    missing = _write_config(tmp_path / "p2", extra='[baseline]\npath = "nowhere"\n')
    line = _one_error_line(*run("gate", "--config", missing, "--quiet"))
    assert "not found" in line and not (tmp_path / "p2" / "out").exists()
    # An output directory that cannot be created (its parent is a file).
    (tmp_path / "file").write_text("keep")
    line = _one_error_line(*run("bench", "--config", project / "sdopt.toml", "--out",
                                tmp_path / "file" / "out"))
    assert "cannot be created" in line and (tmp_path / "file").read_text() == "keep"
    # An existing results directory and the baseline are not replaced.
    line = _one_error_line(*run("bench", "--config", project / "sdopt.toml"))
    assert "already exists" in line and "--overwrite" in line
    line = _one_error_line(*run("baseline", "save", "--config", project / "sdopt.toml",
                                "--results", project / "out"))
    assert "--update-baseline" in line
    assert (baseline / "results.json").read_bytes() == before
    assert "--variants" in _one_error_line(*run("bench", "--config", project / "sdopt.toml",
                                                "--variants", "fast", "--out", tmp_path / "x"))
