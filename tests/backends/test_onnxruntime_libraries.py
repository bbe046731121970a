"""Which TensorRT the ONNX Runtime GPU wheel links, read from the wheel's ELF NEEDED entries.

The image (Dockerfile) pins onnxruntime-gpu and, for the native backend, TensorRT 11. If the
wheel's TensorRT provider links another libnvinfer major, both cannot be installed by pip side by
side, and the provider must be reported unavailable with that reason rather than fall back to
CUDA under its name. The wheel is large (about 256 MB): it is downloaded at most once, to /tmp,
and only the provider library is kept; without network the test is skipped with the reason.
"""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sdopt.backends.onnxruntime import elf_needed, tensorrt_provider_conflict

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROVIDER = "onnxruntime/capi/libonnxruntime_providers_tensorrt.so"


def _pin(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE).group(1)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="'readelf' (binutils) is missing")
def test_elf_needed_reads_what_readelf_reads():
    """The reader sdopt uses at run time (no binutils in the image), against readelf, on the
    libraries of the onnxruntime installed here."""
    ort = pytest.importorskip("onnxruntime", reason="the onnxruntime package is not installed")
    libraries = sorted((Path(ort.__file__).parent / "capi").glob("*.so*"))
    assert libraries
    for library in libraries:
        out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True,
                             check=True).stdout
        assert elf_needed(library) == re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                                                 out), library


def _provider_library(version: str) -> Path:
    folder = Path("/tmp/sdopt-test-wheels") / f"onnxruntime-gpu-{version}"
    library = folder / PROVIDER
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                              "--only-binary=:all:", "--python-version",
                              f"{sys.version_info.major}{sys.version_info.minor}",
                              "--platform", "manylinux_2_28_x86_64", "-d", str(folder),
                              f"onnxruntime-gpu=={version}"],
                             capture_output=True, text=True, timeout=540)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"onnxruntime-gpu=={version} cannot be downloaded here: {exc}")
    wheels = sorted(folder.glob("onnxruntime_gpu-*.whl"))
    if run.returncode or not wheels:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"onnxruntime-gpu=={version} cannot be downloaded here (no network?): {last}")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extract(PROVIDER, folder)
    for wheel in wheels:
        wheel.unlink()  # keep the 1 MB provider library, not the 256 MB wheel
    return library


@pytest.mark.slow
def test_the_pinned_gpu_wheel_links_tensorrt_10_so_its_provider_is_reported_unavailable():
    ort_version, trt_version = _pin("ONNXRUNTIME_GPU_VERSION"), _pin("TENSORRT_VERSION")
    library = _provider_library(ort_version)
    needed = elf_needed(library)
    assert "libnvinfer.so.10" in needed and "libnvonnxparser.so.10" in needed, needed
    capi = library.parent
    # The image's pins: the provider is reported unavailable, with the reason...
    reason = tensorrt_provider_conflict(capi, trt_version, ort_version)
    assert reason and "links libnvinfer.so.10" in reason and trt_version in reason
    # ...and with a TensorRT 10 (an environment of its own) it would be offered.
    assert tensorrt_provider_conflict(capi, "10.13.3.9", ort_version) is None


def test_output_buffer_takes_the_models_shape_not_the_samples():
    """Inpainting: 9 channels in, 4 out; symbolic dimensions come from the sample."""
    from sdopt.backends.onnxruntime import output_shape

    assert output_shape([2, 4, 8, 8], [2, 9, 8, 8]) == [2, 4, 8, 8]
    assert output_shape(["batch", 4, "h", "w"], [2, 9, 16, 24]) == [2, 4, 16, 24]


def test_tensorrt_provider_engine_cache_is_keyed_by_capability_and_versions(tmp_path,
                                                                           monkeypatch):
    from dataclasses import replace

    from sdopt.backends import get_backend
    from sdopt.backends import onnxruntime as ort_backend
    from sdopt.device import detect

    backend = get_backend("onnxruntime")
    gpu = replace(detect("cpu"), kind="cuda", name="NVIDIA H200", cuda_capability="9.0")
    variant = next(v for v in backend.variants(gpu) if v.name == "tensorrt-fp16")

    def engines(device):
        [(name, options), *_] = backend._providers(variant, device, "onnx-key", tmp_path)
        assert name == "TensorrtExecutionProvider" and options["trt_fp16_enable"]
        return options["trt_engine_cache_path"]

    hopper = engines(gpu)
    assert engines(gpu) == hopper
    assert engines(replace(gpu, cuda_capability="8.0")) != hopper
    # TensorRT's version, however it was installed (only tensorrt-cu13, only the libraries).
    monkeypatch.setattr(ort_backend, "tensorrt_version", lambda: "10.13.3.9")
    ten = engines(gpu)
    monkeypatch.setattr(ort_backend, "tensorrt_version", lambda: "11.4.0.106")
    assert len({hopper, ten, engines(gpu)}) >= 2 and ten != engines(gpu)
