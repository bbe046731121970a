import json
import shutil
import subprocess

import pytest

from sdopt.gate.baseline import inputs_for, open_baseline, parse_git_spec, save_baseline
from sdopt.gate.bench import bench_config, write_results
from sdopt.gate.results import read_results
from sdopt.gate.same_job import bench_same_job
from sdopt.gate.compare import compare_results
from sdopt.gate.config import load_config, parse_config
from sdopt.errors import SdoptError

BENCH = {"prompts": ["a photo of a cat"], "seeds": [0], "steps": 2, "runs": 2, "threads": 1,
         "variants": ["optimized"]}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    config = parse_config({"model": "tiny", "bench": BENCH,
                           "optimize": {"candidate": "torch_eager/fp32"}})
    write_results(bench_config(config, out, progress=False), out)
    return out


def test_save_copies_results_and_images_and_never_overwrites_silently(tmp_path, results_dir):
    target = tmp_path / "baseline"
    save_baseline(results_dir, target)
    assert read_results(target)["variants"]["optimized"]["images"][0]["path"] == \
        "images/optimized/0.png"
    assert (target / "images" / "optimized" / "0.png").is_file()
    assert (target / "results.pytest-benchmark.json").is_file()
    before = (target / "results.json").read_bytes()
    with pytest.raises(SdoptError, match="--update-baseline"):
        save_baseline(results_dir, target)
    assert (target / "results.json").read_bytes() == before
    save_baseline(results_dir, target, update=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline"]  # no temporary left


def test_a_failed_save_keeps_the_old_baseline(tmp_path, results_dir):
    target = tmp_path / "baseline"
    save_baseline(results_dir, target)
    before = (target / "results.json").read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(results_dir, broken)
    (broken / "images" / "optimized" / "0.png").unlink()
    with pytest.raises(SdoptError, match="is missing"):
        save_baseline(broken, target, update=True)
    assert (target / "results.json").read_bytes() == before
    assert (target / "images" / "optimized" / "0.png").is_file()


def test_open_from_a_path_and_from_a_downloaded_artifact(tmp_path, results_dir):
    with open_baseline(results_dir) as (results, directory, source):
        assert directory == results_dir and results["kind"] == "sdopt-bench-results"
    artifact = tmp_path / "artifact"
    shutil.copytree(results_dir, artifact / "sdopt-results")
    with open_baseline(artifact) as (_, directory, _):
        assert directory == artifact / "sdopt-results"
    with pytest.raises(SdoptError, match="not found"):
        with open_baseline(tmp_path / "nowhere"):
            pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(SdoptError, match="holds no results.json"):
        with open_baseline(tmp_path / "empty"):
            pass


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "PATH": "/usr/bin:/bin",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo)})


def test_open_from_a_git_ref_reads_the_committed_baseline(tmp_path, results_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    save_baseline(results_dir, repo / ".sdopt" / "baseline")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "baseline")
    committed = json.loads((repo / ".sdopt/baseline/results.json").read_text())
    # The working tree changes after the commit: the git ref must still give the committed one.
    changed = dict(committed, created_unix=1)
    (repo / ".sdopt/baseline/results.json").write_text(json.dumps(changed))
    with open_baseline("git:main:.sdopt/baseline", repo=repo / ".sdopt") as (res, directory, src):
        assert res["created_unix"] == committed["created_unix"] != 1
        assert (directory / "images/optimized/0.png").is_file() and src.startswith("git:main")
    with pytest.raises(SdoptError, match="cannot be read from git"):
        with open_baseline("git:no-such-branch:.sdopt/baseline", repo=repo):
            pass
    with pytest.raises(SdoptError, match="cannot be read from git"):
        with open_baseline("git:main:not/there", repo=repo):
            pass
    assert parse_git_spec("git:origin/main:a/b") == ("origin/main", "a/b")
    with pytest.raises(SdoptError, match="expected git:REF:PATH"):
        parse_git_spec("git:main")


def test_same_job_mode_measures_base_and_head_models_interleaved(tmp_path):
    from sdopt.models import save_preset

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    save_preset("tiny", repo / "model")
    bench = dict(BENCH, runs=3)
    toml = ('model = "model"\n[bench]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in bench.items()) + '[optimize]\ncandidate = "{}"\n')
    (repo / "sdopt.toml").write_text(toml.format("torch_eager/fp32"))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    # The PR changes the model's optimization: head uses channels_last, base stays as committed.
    (repo / "sdopt.toml").write_text(toml.format("torch_eager/fp32-channels_last"))
    config = load_config(repo / "sdopt.toml")
    out = bench_same_job(config, repo / "sdopt.toml", "main", tmp_path / "out", progress=False)
    head, base = read_results(out), read_results(out / "base")
    assert head["variants"]["optimized"]["label"] == "torch_eager/fp32-channels_last"
    assert base["variants"]["optimized"]["label"] == "torch_eager/fp32"
    job = head["config"]["same_job"]["job"]
    assert head["config"]["same_job"] == {"base_ref": "main", "side": "head", "job": job}
    assert base["config"]["same_job"] == {"base_ref": "main", "side": "base", "job": job}
    assert (out / "base/images/optimized/0.png").is_file()
    with open_baseline(out / "base") as base_triplet:
        verdict = compare_results(inputs_for(base_triplet, out))
    assert verdict["verdict"] in ("pass", "regression")
    assert verdict["latency"]["decided_by"] == ["same-job"]  # no drift allowance: one job
    assert verdict["baseline"]["environment_match"] is True
    assert not verdict["quality"]["regressed"]  # fp32 either way: same pixels (to rounding)
    # --overwrite replaces the output only once both sides are measured: a run that fails keeps it.
    before = (out / "results.json").read_bytes()
    with pytest.raises(SdoptError, match="no-such-ref"):
        bench_same_job(config, repo / "sdopt.toml", "no-such-ref", out, progress=False,
                       overwrite=True)
    assert (out / "results.json").read_bytes() == before
    with pytest.raises(SdoptError, match="already exists"):
        bench_same_job(config, repo / "sdopt.toml", "main", out, progress=False)
    bench_same_job(config, repo / "sdopt.toml", "main", out, progress=False, overwrite=True)
    assert read_results(out)["config"]["same_job"]["job"] != job
