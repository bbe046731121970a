import json
import time

import pytest
from click.testing import CliRunner

from sdopt import cache
from sdopt.cli import main
from sdopt.errors import SdoptError


def _builder(calls, payload=b"x" * 1000):
    def build(tmp):
        calls.append(tmp)
        (tmp / "artifact.bin").write_bytes(payload)
        return {"exporter": "test"}
    return build


def test_second_fetch_is_a_hit_and_skips_the_build(tmp_path):
    calls = []
    first = cache.fetch_or_build("onnx-unet", {"weights": "a", "shapes": [1, 2]},
                                 _builder(calls), root=tmp_path)
    second = cache.fetch_or_build("onnx-unet", {"shapes": [1, 2], "weights": "a"},
                                  _builder(calls), root=tmp_path)
    assert (first.hit, second.hit) == (False, True)
    assert len(calls) == 1, "the builder ran once"
    assert first.path == second.path and (second.path / "artifact.bin").is_file()
    assert second.built == {"exporter": "test"}
    other = cache.fetch_or_build("onnx-unet", {"weights": "b", "shapes": [1, 2]},
                                 _builder(calls), root=tmp_path)
    assert not other.hit and other.path != first.path and len(calls) == 2


def test_env_and_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("SDOPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "sdopt"


def test_a_failed_build_leaves_no_entry(tmp_path):
    def boom(tmp):
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.fetch_or_build("openvino-ir", {"k": 1}, boom, root=tmp_path)
    assert cache.list_entries(tmp_path) == []
    calls = []
    assert not cache.fetch_or_build("openvino-ir", {"k": 1}, _builder(calls), root=tmp_path).hit
    assert len(calls) == 1


def test_incomplete_entry_is_rebuilt(tmp_path):
    calls = []
    entry = cache.fetch_or_build("x", {"k": 1}, _builder(calls), root=tmp_path)
    (entry.path / cache.ENTRY_FILE).unlink()  # e.g. a copy interrupted by hand
    assert not cache.fetch_or_build("x", {"k": 1}, _builder(calls), root=tmp_path).hit
    assert len(calls) == 2


def test_prune_by_size_keeps_the_most_recently_used(tmp_path):
    paths = []
    for i in range(3):
        e = cache.fetch_or_build("k", {"i": i}, _builder([], b"y" * 10_000), root=tmp_path)
        meta = json.loads((e.path / cache.ENTRY_FILE).read_text())
        meta["last_used_unix"] = time.time() - 1000 + i  # entry 2 is the newest
        (e.path / cache.ENTRY_FILE).write_text(json.dumps(meta))
        paths.append(e.path)
    # room for two entries, not three (entries differ by a few bytes of JSON)
    size = max(e.size_bytes for e in cache.list_entries(tmp_path)) + 10
    assert cache.prune(tmp_path, max_bytes=size * 2, dry_run=True) and all(p.exists() for p in paths)
    removed = cache.prune(tmp_path, max_bytes=size * 2)
    assert [e.path for e in removed] == [paths[0]]
    assert not paths[0].exists() and paths[1].exists() and paths[2].exists()
    assert len(cache.prune(tmp_path, older_than_s=100)) == 2
    assert cache.list_entries(tmp_path) == []


def test_parse_size():
    assert cache.parse_size("2G") == 2 * 2**30
    assert cache.parse_size("500MB") == 500 * 2**20
    assert cache.parse_size("1.5GiB") == int(1.5 * 2**30)
    assert cache.parse_size("0") == 0
    with pytest.raises(SdoptError, match="size 'lots'"):
        cache.parse_size("lots")


def test_cli_info_and_prune(tmp_path):
    cache.fetch_or_build("onnx-unet", {"a": 1}, _builder([]), root=tmp_path)
    cache.fetch_or_build("openvino-ir", {"a": 1}, _builder([]), root=tmp_path)
    runner = CliRunner()
    env = {"SDOPT_CACHE": str(tmp_path)}
    out = runner.invoke(main, ["cache", "info"], env=env)
    assert out.exit_code == 0, out.output
    assert "2 entries" in out.output and "onnx-unet" in out.output
    data = json.loads(runner.invoke(main, ["cache", "info", "--json"], env=env).output)
    assert data["size_bytes"] == sum(e["size_bytes"] for e in data["entries"]) > 2000
    bad = runner.invoke(main, ["cache", "prune", "--max-size", "huge"], env=env)
    assert bad.exit_code == 2 and "size 'huge'" in bad.output
    out = runner.invoke(main, ["cache", "prune", "--all"], env=env)
    assert out.exit_code == 0 and "removed 2 entries" in out.output
    assert cache.list_entries(tmp_path) == []
