import json
import os
import subprocess
import sys

import pytest


def sdopt_cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "sdopt.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=900, cwd=cwd, env=env)


def test_demo_prints_the_tables_and_saves_a_loadable_model(tmp_path):
    out = tmp_path / "demo"
    proc = sdopt_cli("demo", "--preset", "tiny", "--size", "64", "--out", out, "--repeats", "2",
                     "--backend", "torch_eager", "--backend", "torch_int8",
                     "--metric-aggregate", "mean")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All candidates" in proc.stdout and "sdopt results" in proc.stdout
    assert "Improvement" in proc.stdout and "saved model:" in proc.stdout
    # Not a terminal (a CI log): reasons are lines under the table, never a cut column.
    assert "reasons:" in proc.stdout and "torch_eager/fp16: fp16 is only tried on CUDA" in proc.stdout
    assert "on the mean over prompts" in proc.stdout and "worst prompt" in proc.stdout
    # Every progress line has its total; none says why torchvision is missing.
    assert "/None" not in proc.stderr and "torchvision" not in proc.stderr + proc.stdout
    result = json.loads((out / "optimization.json").read_text())
    assert result["metric_aggregate"] == "mean"
    assert result["selected"]["status"] == "selected"
    assert result["samples"]["sample_shape"] == [2, 4, 32, 32]

    import sdopt

    loaded = sdopt.load_model(out, pipe=sdopt.build_preset("tiny"))
    # The pick may carry the bf16 VAE decoder on top of its backend ("torch_eager/bf16+vae_bf16"),
    # which the saved model restores with it.
    assert loaded.unet.variant.id == result["selected"]["id"].split("+")[0]
    assert loaded.unet.info["techniques"] == result["selected"]["pipeline_techniques"]


def test_optimize_from_a_prompts_file_and_a_folder(tmp_path):
    import sdopt.models

    folder = sdopt.models.save_preset("tiny", tmp_path / "model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# prompts for the gate\na photo of a cat\n\na city at night\n")
    proc = sdopt_cli("optimize", "--model", folder, "--prompts", prompts, "--out",
                     tmp_path / "opt", "--metric-drop-ths", "0.05", "--backend", "torch_eager",
                     "--steps", "3", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "opt" / "optimization.json").read_text())
    assert result["metric_aggregate"] == "max", "the threshold holds on every prompt by default"
    scheduler = sdopt.models.build_preset("tiny").scheduler
    scheduler.set_timesteps(3)  # PNDM makes one UNet call more than it has steps
    assert result["samples"]["captured_calls"] == 2 * len(scheduler.timesteps)


def test_optimize_a_single_file_checkpoint(tmp_path):
    """A user's original-layout .safetensors file with --single-file-config, end to end."""
    import sdopt
    import sdopt.models

    from ..ldm_checkpoint import save_ldm_checkpoint

    folder = sdopt.models.save_preset("tiny", tmp_path / "configs")
    checkpoint = save_ldm_checkpoint(sdopt.build_preset("tiny"), tmp_path / "my-model.safetensors")
    out = tmp_path / "opt"
    proc = sdopt_cli("optimize", "--model", checkpoint, "--single-file-config", folder,
                     "--prompt", "a photo of a cat", "--out", out, "--backend", "torch_eager",
                     "--steps", "2", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{checkpoint}: selected" in proc.stdout
    result = json.loads((out / "optimization.json").read_text())
    assert result["selected"]["status"] == "selected"
    # The UNet optimized from the single file has the preset's exact weights.
    from sdopt.identity import weights_hash

    manifest = json.loads((out / "sdopt_manifest.json").read_text())
    tiny = sdopt.build_preset("tiny")
    assert manifest["components"]["unet"]["source_hash"] == weights_hash(tiny.unet)
    loaded = sdopt.load_model(out, pipe=tiny)
    assert loaded.unet.variant.id == result["selected"]["id"]


@pytest.mark.parametrize("args,needle", [
    (["optimize", "--model", "/nonexistent/model", "--prompt", "x", "--out", "{tmp}/o"],
     "model '/nonexistent/model' not found"),
    (["optimize", "--model", "tiny", "--prompts", "{tmp}/empty.txt", "--out", "{tmp}/o"],
     "holds no prompt"),
    (["optimize", "--model", "tiny", "--out", "{tmp}/o"], "no prompt given"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/o", "--backend", "tvmx"],
     "unknown backend name 'tvmx'"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/o",
      "--metric-drop-ths", "3"], "metric_drop_ths 3.0 is out of range"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/o", "--device", "tpu"],
     "--device: 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/o", "--metric", "lpips"],
     "--metric: 'lpips' is not one of"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/full"],
     "already exists and is not empty"),
    (["models", "save", "huge", "{tmp}/m"], "PRESET: 'huge' is not one of"),
    (["optimize", "--model", "tiny", "--prompt", "x", "--out", "{tmp}/o",
      "--metric-aggregate", "worst"], "--metric-aggregate: 'worst' is not one of 'max', 'mean'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    proc = sdopt_cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"


def test_backends_lists_availability():
    proc = sdopt_cli("backends")
    assert proc.returncode == 0
    assert "torch_eager/bf16" in proc.stdout and "torch_compile/fp32" in proc.stdout
    assert "only tried on CUDA" in proc.stdout
