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


class _NoOpSqueeze(torch.nn.Module):
    """squeeze(1) of a dimension that is not 1: a no-op in torch, an invalid ONNX Squeeze from
    the dynamo exporter (as PixArt's transformer, which squeezes its 256 tokens)."""

    def forward(self, x):
        return x.squeeze(1) * 2


def test_a_cached_export_made_before_the_graph_check_is_built_again(tmp_path):
    """An export cached before sdopt checked graphs keeps its key: served as it was, ONNX
    Runtime could not load it and every ONNX Runtime variant of PixArt failed from the cache.
    The cache checks such an entry once and builds it again, with the exporter fallback, and
    what was derived from the stale export (a quantization, an engine) follows."""
    pytest.importorskip("onnx")
    from sdopt import cache

    module, args = _NoOpSqueeze(), (torch.ones(2, 3),)
    parts = {"weights": "w", "shapes": [2, 3]}

    def stale(tmp):  # what an older sdopt cached: the dynamo export, unchecked
        export._export_dynamo(module, args, tmp / export.ONNX_FILE, ["x"], ["y"], export.OPSET)
        return {"exporter": "dynamo", "opset": export.OPSET, "failed": {},
                "file": export.ONNX_FILE}

    def fixed(tmp):
        return export.export_onnx(module, args, tmp, ["x"], ["y"])

    def never(tmp):
        raise AssertionError("a valid entry is served, not built")

    old = cache.fetch_or_build("onnx-unet", parts, stale, root=tmp_path)
    with pytest.raises(RuntimeError, match="graph is invalid"):
        export.check_graph(old.path / export.ONNX_FILE)
    derived = cache.fetch_or_build("onnxruntime-int8", {"source": old.key},
                                   lambda tmp: {"from": "stale"}, root=tmp_path)
    new = cache.fetch_or_build("onnx-unet", parts, fixed, root=tmp_path,
                               valid=export.checked_export)
    assert not new.hit and (new.key, new.path) == (old.key, old.path)
    assert new.built["exporter"] == "legacy" and new.built["checked"] is True
    assert "invalid" in new.built["failed"]["dynamo"]
    np.testing.assert_array_equal(_run(new.path, {"x": np.ones((2, 3), np.float32)}),
                                  np.full((2, 3), 2, np.float32))
    again = cache.fetch_or_build("onnxruntime-int8", {"source": new.key},
                                 lambda tmp: {"from": "rebuilt"}, root=tmp_path,
                                 valid=cache.made_after(new))
    assert not again.hit and again.key == derived.key and again.built == {"from": "rebuilt"}
    # From then on both are served from the cache.
    hit = cache.fetch_or_build("onnx-unet", parts, never, root=tmp_path,
                               valid=export.checked_export)
    assert hit.hit and hit.built["exporter"] == "legacy"
    assert cache.fetch_or_build("onnxruntime-int8", {"source": hit.key}, never, root=tmp_path,
                                valid=cache.made_after(hit)).hit


def test_a_valid_export_cached_before_the_check_is_served_and_checked_once(tmp_path,
                                                                          monkeypatch):
    pytest.importorskip("onnx")
    import json

    from sdopt import cache

    def legacy(tmp):  # a valid graph, cached without the "checked" mark
        export._export_legacy(torch.nn.Linear(3, 2), (torch.ones(1, 3),),
                              tmp / export.ONNX_FILE, ["x"], ["y"], export.OPSET)
        return {"exporter": "legacy", "failed": {}, "file": export.ONNX_FILE}

    def never(tmp):
        raise AssertionError("a valid entry is served, not built")

    parts = {"weights": "linear"}
    first = cache.fetch_or_build("onnx-unet", parts, legacy, root=tmp_path)
    assert "checked" not in first.built
    hit = cache.fetch_or_build("onnx-unet", parts, never, root=tmp_path,
                               valid=export.checked_export)
    assert hit.hit and hit.built["checked"] is True
    meta = json.loads((hit.path / cache.ENTRY_FILE).read_text())
    assert meta["built"]["checked"] is True  # kept: the next hit does not check again
    calls = []
    monkeypatch.setattr(export, "check_graph", lambda path: calls.append(path))
    assert cache.fetch_or_build("onnx-unet", parts, never, root=tmp_path,
                                valid=export.checked_export).hit
    assert calls == []
