"""The real TensorRT Python API, read from NVIDIA's bindings wheel on a machine without a GPU.

The wheel's extension (``tensorrt.so``) links ``libnvinfer``/``libnvonnxparser``/
``libnvinfer_plugin``, which come from a 3 GB libraries wheel and need CUDA. Importing the
extension only needs the few symbols it takes from them to resolve, and its module
initialisation calls none of them, so small stub libraries carrying those names (built here with
the C compiler) let Python import the real bindings and list every class, enum member and
method signature (pybind11 writes them into the docstrings). Tests compare sdopt's calls and its
test fake against that listing, so an API that TensorRT renames or removes fails a test here,
not on a user's GPU runner.

Downloads once into ``~/.cache/sdopt-tests/tensorrt`` (outside the repository). Without network,
a compiler or ``nm``, the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest

# The Dockerfile's pin (TENSORRT_VERSION): the bindings wheel of the same version.
TENSORRT_VERSION = "11.4.0.106"
WHEEL = "tensorrt-cu13-bindings"
CACHE = Path(os.environ.get("SDOPT_TEST_CACHE", Path.home() / ".cache" / "sdopt-tests")) / \
    "tensorrt" / TENSORRT_VERSION

_DUMP = r"""
import ctypes, inspect, json, sys
for lib in sys.argv[2:]:
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt

def describe(obj):
    members = {}
    for name in dir(obj):
        if name.startswith("__") and name not in ("__init__", "__version__"):
            continue
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            value = getattr(obj, name, None)
        if isinstance(value, property):
            kind = "property"
        elif callable(value) and not isinstance(value, type):
            kind = "method"
        elif isinstance(value, type):
            kind = "class"
        else:
            kind = "value"
        doc = getattr(value, "__doc__", None) if kind in ("method", "class") else None
        members[name] = {"kind": kind, "doc": doc if isinstance(doc, str) else None}
    return members

api = {"version": trt.__version__, "classes": {}, "module": {}}
for name in dir(trt):
    if name.startswith("_"):
        continue
    value = getattr(trt, name)
    if isinstance(value, type):
        entry = {"members": describe(value)}
        if hasattr(value, "__members__"):
            entry["enum"] = {k: int(v) for k, v in value.__members__.items()}
        api["classes"][name] = entry
    else:
        api["module"][name] = {"kind": "method" if callable(value) else "value",
                               "doc": getattr(value, "__doc__", None) if callable(value) else None}
json.dump(api, sys.stdout)
"""


_SKIPPED: list[str] = []  # the first reason, so that one missing download is not retried per test


def _skip(reason: str):
    _SKIPPED.append(f"the real TensorRT {TENSORRT_VERSION} API cannot be read here: {reason}")
    pytest.skip(_SKIPPED[0])


def _wheel() -> Path:
    wheels = sorted(CACHE.glob("tensorrt_cu13_bindings-*.whl"))
    if wheels:
        return wheels[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    try:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                              "--only-binary=:all:", "--python-version", tag[2:],
                              "--platform", "manylinux_2_28_x86_64", "--implementation", "cp",
                              "-d", str(CACHE), f"{WHEEL}=={TENSORRT_VERSION}"],
                             capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _skip(f"pip download of {WHEEL}=={TENSORRT_VERSION} failed ({exc})")
    wheels = sorted(CACHE.glob("tensorrt_cu13_bindings-*.whl"))
    if run.returncode or not wheels:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        _skip(f"pip download of {WHEEL}=={TENSORRT_VERSION} failed (no network?): {last}")
    return wheels[0]


def _needed(extension: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(extension)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _is_tensorrt(lib: str) -> bool:
    return lib.startswith(("libnvinfer", "libnvonnxparser"))


def _undefined_symbols(extension: Path) -> list[str]:
    """The extension's undefined dynamic symbols that neither Python nor the system libraries
    it links (libstdc++, libc...) provide: the ones the TensorRT libraries would."""
    import ctypes

    nm = shutil.which("nm")
    if nm is None:
        _skip("'nm' (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--undefined-only", str(extension)], capture_output=True,
                         text=True, check=True).stdout
    providers = [ctypes.CDLL(None)]
    for lib in _needed(extension):
        if not _is_tensorrt(lib):
            try:
                providers.append(ctypes.CDLL(lib))
            except OSError:
                _skip(f"the system library {lib} the bindings link is missing")
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            name = parts[1].split("@")[0]
            if not any(hasattr(p, name) for p in providers):
                names.append(name)
    return names


def _stubs(extension: Path, directory: Path) -> list[Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _skip("no C compiler to build stand-ins for the CUDA-only TensorRT libraries")
    libs = [name for name in _needed(extension) if _is_tensorrt(name)]
    source = directory / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n"
                              for name in _undefined_symbols(extension)))
    paths = []
    for lib in libs:
        path = directory / lib
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(path), f"-Wl,-soname,{lib}",
                        str(source)], check=True, capture_output=True)
        paths.append(path)
    return paths


@lru_cache(maxsize=1)
def real_api() -> dict:
    """Every class, enum member and method (with its pybind11 docstring) of the real bindings;
    skips the calling test with the reason when they cannot be read here."""
    if _SKIPPED:
        pytest.skip(_SKIPPED[0])
    if not sys.platform.startswith("linux"):
        _skip("reading the Linux wheel's extension needs Linux")
    if shutil.which("readelf") is None:
        _skip("'readelf' (binutils) is not installed")
    wheel = _wheel()
    root = CACHE / "unpacked"
    extension = root / "tensorrt_bindings" / "tensorrt.so"
    if not extension.is_file():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root)
    stubs = _stubs(extension, CACHE)
    run = subprocess.run([sys.executable, "-c", _DUMP, str(root), *map(str, stubs)],
                         capture_output=True, text=True, timeout=120)
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        _skip(f"importing the bindings with stub libraries failed: {last}")
    return json.loads(run.stdout)


def signatures(doc: str | None, name: str) -> list[list[str]]:
    """The parameter names (without self) of each overload pybind11 wrote into ``doc``."""
    found = []
    for match in re.finditer(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\)(?: ->|$)", doc or "",
                             re.MULTILINE):
        params, depth, current = [], 0, ""
        for ch in match.group(1):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                params.append(current)
                current = ""
            else:
                current += ch
        if current.strip():
            params.append(current)
        names = [p.split(":")[0].split("=")[0].strip() for p in params]
        found.append([n for n in names if n and n != "self" and not n.startswith("*")])
    return found
