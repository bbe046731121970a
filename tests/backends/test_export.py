"""ONNX export of the three pipeline parts, checked against torch with ONNX Runtime."""

import numpy as np
import pytest
import torch

from sdopt.backends import export

ort = pytest.importorskip("onnxruntime")


def _run(directory, feeds):
    session = ort.InferenceSession(str(directory / export.ONNX_FILE),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_vae_decoder_export_matches_torch(tiny_pipe, tmp_path):
    shape = (1, 4, 8, 8)
    info = export.export_vae_decoder(tiny_pipe.vae, shape, tmp_path)
    assert info["exporter"] in export.EXPORTERS and info["inputs"] == {"latent": list(shape)}
    latent = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = tiny_pipe.vae.decode(latent, return_dict=False)[0].numpy()
    assert np.abs(_run(tmp_path, {"latent": latent.numpy()}) - ref).max() < 1e-4


def test_text_encoder_export_matches_torch(tiny_pipe, tmp_path):
    export.export_text_encoder(tiny_pipe.text_encoder, 1, 77, tmp_path)
    ids = tiny_pipe.tokenizer(["a photo of a cat"], padding="max_length", max_length=77,
                              return_tensors="pt").input_ids
    with torch.no_grad():
        ref = tiny_pipe.text_encoder(ids, return_dict=False)[0].numpy()
    assert np.abs(_run(tmp_path, {"input_ids": ids.numpy()}) - ref).max() < 1e-4


def test_fallback_to_the_legacy_exporter_is_recorded(tiny_pipe, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("dynamo cannot trace this")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    info = export.export_text_encoder(tiny_pipe.text_encoder, 1, 77, tmp_path)
    assert info["exporter"] == "legacy"
    assert "dynamo cannot trace this" in info["failed"]["dynamo"]
    # weights are external data, as for models over 2 GB
    assert (tmp_path / (export.ONNX_FILE + ".data")).is_file()
    ids = np.zeros((1, 77), dtype=np.int64)
    with torch.no_grad():
        ref = tiny_pipe.text_encoder(torch.from_numpy(ids), return_dict=False)[0].numpy()
    assert np.abs(_run(tmp_path, {"input_ids": ids}) - ref).max() < 1e-4


class _Untraceable(torch.nn.Module):
    def forward(self, x):
        raise ValueError("data-dependent python")


def test_every_exporter_failing_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="every ONNX exporter failed.*legacy: ValueError"):
        export.export_onnx(_Untraceable(), (torch.zeros(1),), tmp_path, ("x",), ("y",),
                           exporters=("legacy",))


def test_unet_timestep_is_a_batch_vector():
    assert export.unet_timestep(torch.tensor(999), 2).tolist() == [999.0, 999.0]
    assert export.unet_timestep(torch.tensor([5, 7]), 2).tolist() == [5.0, 7.0]


def test_copying_a_cached_artifact_leaves_the_caches_marker_behind(tmp_path):
    """A cache entry carries sdopt's marker (the cache made that directory); a saved model is
    marked by save_model's own atomic write, never by a marker copied from the cache."""
    from sdopt.cache import ENTRY_FILE, fetch_or_build
    from sdopt.store import MARKER_NAME, atomic_directory, marker_kind

    def build(directory):
        (directory / export.ONNX_FILE).write_bytes(b"graph")
        (directory / "weights.bin").write_bytes(b"weights")

    entry = fetch_or_build("artifact-test", {"n": 1}, build, root=tmp_path / "cache")
    assert {MARKER_NAME, ENTRY_FILE} <= {p.name for p in entry.path.iterdir()}
    plain = tmp_path / "plain" / "unet"
    export.copy_artifact(entry.path, plain)
    assert sorted(p.name for p in plain.iterdir()) == sorted([export.ONNX_FILE, "weights.bin"])
    export.copy_artifact(entry.path, tmp_path / "named", (export.ONNX_FILE, MARKER_NAME))
    assert [p.name for p in (tmp_path / "named").iterdir()] == [export.ONNX_FILE]
    # Into a directory sdopt is writing as another kind of output: its own marker stays.
    with atomic_directory(tmp_path / "model", kind="model") as directory:
        export.copy_artifact(entry.path, directory)
    assert marker_kind(tmp_path / "model") == "model"
    assert (tmp_path / "model" / export.ONNX_FILE).read_bytes() == b"graph"
