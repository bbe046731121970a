import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sdopt
from sdopt.backends.base import BACKENDS
from sdopt.errors import SdoptError
from sdopt.optimize.manifest import MANIFEST_NAME

SCRIPT = Path(__file__).parent / "scripts" / "roundtrip.py"


def _run(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("candidate", [
    "search", "torch_eager/bf16", "torch_eager/fp32-channels_last", "torch_int8/dynamic-linear",
    pytest.param("torch_compile/bf16", marks=pytest.mark.slow),
])
def test_saved_model_gives_the_same_images_in_a_new_process(tmp_path, candidate):
    directory = tmp_path / "saved"
    chosen = _run("save", directory, candidate)
    if candidate != "search":
        assert chosen == candidate
    assert _run("load", directory, candidate) == chosen
    first = np.load(f"{directory}.first.npy")
    second = np.load(f"{directory}.second.npy")
    assert first.shape == (64, 64, 3)
    assert np.abs(first - second).max() <= 1
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["components"]["unet"]["backend"] == chosen.split("/")[0]
    assert manifest["libraries"]["torch"].startswith("2.13")
    assert not list(directory.rglob("*.pt")) and not list(directory.rglob("*.pkl"))


@pytest.fixture(scope="module")
def saved_bf16(tmp_path_factory):
    pipe = sdopt.build_preset("tiny")
    directory = tmp_path_factory.mktemp("saved") / "bf16"
    sdopt.save_model(sdopt.apply_variant(pipe, "torch_eager/bf16"), directory)
    return directory


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_corrupt_manifest(saved_bf16, tmp_path, fresh_tiny_pipe):
    broken = _copy(saved_bf16, tmp_path / "m")
    (broken / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(SdoptError, match="is corrupt: not valid JSON"):
        sdopt.load_model(broken, pipe=fresh_tiny_pipe)


def test_manifest_missing_field(saved_bf16, tmp_path, fresh_tiny_pipe):
    broken = _copy(saved_bf16, tmp_path / "m")
    _edit_manifest(broken, lambda d: d["components"]["unet"].pop("backend"))
    with pytest.raises(SdoptError, match=r"components\.unet\.backend is missing"):
        sdopt.load_model(broken, pipe=fresh_tiny_pipe)


def test_saved_by_another_backend_version(saved_bf16, tmp_path, fresh_tiny_pipe):
    old = _copy(saved_bf16, tmp_path / "m")
    _edit_manifest(old, lambda d: d["components"]["unet"].update(backend_version=99))
    with pytest.raises(SdoptError, match="format v99, this sdopt .* reads v1"):
        sdopt.load_model(old, pipe=fresh_tiny_pipe)


def test_other_schema_version(saved_bf16, tmp_path, fresh_tiny_pipe):
    old = _copy(saved_bf16, tmp_path / "m")
    _edit_manifest(old, lambda d: d.update(schema_version=0))
    with pytest.raises(SdoptError, match="schema_version is 0"):
        sdopt.load_model(old, pipe=fresh_tiny_pipe)


def test_corrupt_weights(saved_bf16, tmp_path, fresh_tiny_pipe):
    broken = _copy(saved_bf16, tmp_path / "m")
    (broken / "unet" / "unet.safetensors").write_bytes(b"garbage")
    with pytest.raises(SdoptError, match="unet.safetensors' is corrupt"):
        sdopt.load_model(broken, pipe=fresh_tiny_pipe)


def test_missing_directory_and_missing_pipe(saved_bf16, tmp_path, fresh_tiny_pipe):
    with pytest.raises(SdoptError, match="not found"):
        sdopt.load_model(tmp_path / "nothing", pipe=fresh_tiny_pipe)
    with pytest.raises(SdoptError, match="needs pipe="):
        sdopt.load_model(saved_bf16)


def test_other_architecture_is_refused(saved_bf16, fresh_tiny_pipe):
    from diffusers import UNet2DConditionModel

    cfg = dict(fresh_tiny_pipe.unet.config)
    cfg["layers_per_block"] = 1
    fresh_tiny_pipe.unet = UNet2DConditionModel.from_config(cfg)
    with pytest.raises(SdoptError, match="different UNet architecture"):
        sdopt.load_model(saved_bf16, pipe=fresh_tiny_pipe)


def test_save_refuses_to_overwrite_and_is_atomic(saved_bf16, tmp_path, fresh_tiny_pipe,
                                                 monkeypatch):
    optimized = sdopt.apply_variant(fresh_tiny_pipe, "torch_eager/bf16")
    with pytest.raises(SdoptError, match="already exists"):
        sdopt.save_model(optimized, saved_bf16)
    before = sorted(p.name for p in tmp_path.iterdir())

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(BACKENDS["torch_eager"], "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        sdopt.save_model(optimized, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no partial output is left"


def test_overwrite_replaces(tmp_path, fresh_tiny_pipe):
    target = tmp_path / "m"
    sdopt.save_model(sdopt.apply_variant(fresh_tiny_pipe, "torch_eager/bf16"), target)
    sdopt.save_model(sdopt.apply_variant(fresh_tiny_pipe, "torch_int8/dynamic-linear"), target,
                     overwrite=True)
    data = json.loads((target / MANIFEST_NAME).read_text())
    assert data["components"]["unet"]["backend"] == "torch_int8"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_save_needs_an_optimized_model(tiny_pipe, tmp_path):
    with pytest.raises(SdoptError, match="without an sdopt-optimized UNet"):
        sdopt.save_model(tiny_pipe, tmp_path / "x")


# --- store.py: modes, the marker, what may be replaced (issue #15) --------------------------

from sdopt.store import (MARKER_NAME, atomic_directory, atomic_write_text, check_replaceable,
                         remove_output, write_json)


@pytest.fixture
def umask():
    """Set the process umask for one test (a CI container's is usually 022)."""
    import os

    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644),
                                                       (0o077, 0o700, 0o600),
                                                       (0o002, 0o775, 0o664)])
def test_written_outputs_get_the_umask_modes_not_mkstemps(tmp_path, umask, mask, dir_mode,
                                                          file_mode):
    """A later step as another user (upload-artifact as uid 1001 after a root container) must
    be able to read what sdopt wrote: ordinary umask modes, still written atomically."""
    umask(mask)
    with atomic_directory(tmp_path / "out") as tmp:
        write_json(tmp / "results.json", {"a": 1})
        (tmp / "images").mkdir()
    atomic_write_text(tmp_path / "out" / "report.md", "# hi\n")
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == dir_mode
    for name in ("results.json", "report.md", MARKER_NAME):
        assert (out / name).stat().st_mode & 0o777 == file_mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def _victim(path):
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("precious")
    return path


def test_overwrite_replaces_only_what_sdopt_made(tmp_path):
    victim = _victim(tmp_path / "victim")
    with pytest.raises(SdoptError, match=f"not written by sdopt \\(no {MARKER_NAME}"):
        with atomic_directory(victim, overwrite=True) as tmp:
            (tmp / "x").write_text("new")
    with pytest.raises(SdoptError, match="not written by sdopt"):
        remove_output(victim)
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
    ours = tmp_path / "ours"
    with atomic_directory(ours) as tmp:
        (tmp / "a").write_text("1")
    with atomic_directory(ours, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in ours.iterdir()) == [MARKER_NAME, "b"]
    remove_output(ours)
    assert not ours.exists()


def test_never_the_working_directory_home_or_an_ancestor(tmp_path, monkeypatch):
    home = tmp_path / "home" / "me"
    work = _victim(tmp_path / "repo" / "sub")
    for directory in (home, tmp_path / "repo"):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER_NAME).write_text("forged: a marker does not make HOME an output")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for target in (home, home.parent, work, tmp_path / "repo", tmp_path):
        with pytest.raises(SdoptError, match="is or contains"):
            check_replaceable(target)
        with pytest.raises(SdoptError, match="is or contains"):
            remove_output(target)
    extra = _victim(tmp_path / "elsewhere" / "config")
    (extra.parent / MARKER_NAME).write_text("")
    with pytest.raises(SdoptError, match="is or contains"):
        check_replaceable(extra.parent, protected=[extra])
    assert (work / "keep.txt").read_text() == "precious" and home.is_dir()


def test_a_link_or_a_file_is_never_replaced(tmp_path):
    real = _victim(tmp_path / "real")
    (real / MARKER_NAME).write_text("")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SdoptError, match="symbolic link"):
        remove_output(tmp_path / "link")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(SdoptError, match="is a file"):
        with atomic_directory(tmp_path / "file", overwrite=True):
            pass
    assert (real / "keep.txt").is_file() and (tmp_path / "file").read_text() == "keep"


def test_the_marker_names_the_kind_of_output(tmp_path):
    """A results directory never replaces a saved model or model folder sdopt wrote."""
    from sdopt.store import has_marker, marker_kind

    model = tmp_path / "model"
    with atomic_directory(model) as tmp:
        (tmp / "weights").write_text("w")
    assert marker_kind(model) == "output" and not has_marker(model, "results")
    with pytest.raises(SdoptError, match=r"another kind of sdopt output \(output"):
        with atomic_directory(model, overwrite=True, kind="results"):
            pass
    assert (model / "weights").read_text() == "w"


# --- a full disk: one line, nothing left behind --------------------------------------------

import shutil  # noqa: E402


def _in_small_disk(tmp_path, code: str, size: str = "1m") -> subprocess.CompletedProcess:
    """Run ``code`` (python) with a real, nearly empty ``size`` tmpfs at ``tmp_path/disk``
    (mounted in a private mount namespace, so nothing outside the test sees it), and a file the
    user had on it before."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare for a private small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && echo mine > {disk}/user-file && "
              f"{sys.executable} -c \"$1\"; rc=$?; ls -A {disk}; cat {disk}/user-file; exit $rc")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"unshare -rm cannot make a mount namespace here: {probe.stderr.decode()}")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", code],
                          capture_output=True, text=True, timeout=300)


def _expect_disk_full(tmp_path, setup: str, write: str) -> subprocess.CompletedProcess:
    """Run ``setup`` then ``write`` (python lines) on the small disk; the process exits 7 when
    ``write`` raised DiskFullError, after printing 'ERR <message>'."""
    proc = _in_small_disk(tmp_path, setup + (
        "import sys\n"
        "from sdopt.errors import DiskFullError\n"
        "try:\n"
        f"    {write}\n"
        "except DiskFullError as exc:\n"
        "    print('ERR', exc); sys.exit(7)\n"))
    assert proc.returncode == 7, proc.stdout + proc.stderr[-2000:]
    # the listing of the disk after the failure: the user's file, intact, and nothing else
    assert proc.stdout.splitlines()[-2:] == ["user-file", "mine"]
    return proc


def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    proc = _expect_disk_full(
        tmp_path, "import sdopt\npipe = sdopt.build_preset('tiny')\n",
        f"sdopt.save_model(sdopt.apply_variant(pipe, 'torch_eager/fp32'), '{disk}/model')")
    err = next(line for line in proc.stdout.splitlines() if line.startswith("ERR "))
    assert f"no space left on the disk of '{disk}/model'" in err
    assert "written before it filled" in err and "free now" in err and "SDOPT_CACHE" in err


def test_the_cli_reports_a_full_disk_in_one_line_exit_2(tmp_path):
    disk = tmp_path / "disk"
    proc = _in_small_disk(tmp_path, (
        "import sys\n"
        "from sdopt.cli import main\n"
        f"sys.argv = ['sdopt', 'models', 'save', 'tiny', '{disk}/pipe']\n"
        "main()\n"))
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("error: no space left on the disk of") for line in lines), lines
    assert proc.stdout.splitlines()[-2:] == ["user-file", "mine"]


def test_a_full_disk_while_writing_a_file(tmp_path):
    disk = tmp_path / "disk"
    proc = _expect_disk_full(tmp_path, "from sdopt.store import write_json\n",
                             f"write_json('{disk}/user-file', {{'x': 'y' * 2_000_000}})")
    assert "no space left on the disk of" in proc.stdout  # and the old file was kept


@pytest.mark.parametrize("writer", ["openvino", "torch"])
def test_writers_that_hide_the_errno_still_read_as_a_full_disk(tmp_path, writer):
    """OpenVINO's IR writer says only 'basic_ios::clear: iostream error' and torch.save
    'unexpected pos' when the disk fills: the free space left decides."""
    if writer == "openvino":
        pytest.importorskip("openvino", reason="the OpenVINO IR writer needs sdopt[cpu]")
    disk = tmp_path / "disk"
    write = {
        "openvino": ("import numpy as np, openvino as ov, openvino.opset13 as ops\n"
                     "x = ops.parameter([1, 1024], np.float32)\n"
                     "w = ops.constant(np.ones((1024, 2048), np.float32))\n"
                     "m = ov.Model([ops.matmul(x, w, False, False)], [x])\n"
                     "save = lambda d: ov.save_model(m, str(d / 'm.xml'), "
                     "compress_to_fp16=False)\n"),
        "torch": ("import torch\n"
                  "save = lambda d: torch.save({'w': torch.ones(2_000_000)}, d / 'w.pt')\n"),
    }[writer]
    proc = _expect_disk_full(tmp_path, write + "from sdopt.store import atomic_directory\n",
                             f"with atomic_directory('{disk}/out') as d: save(d)")
    assert f"no space left on the disk of '{disk}/out'" in proc.stdout
