"""Optional dependencies: probed in one place, imported lazily, named with a real install hint.

diffusers' model (``utils/import_utils.py``): each package is probed in one place (``find_spec``
plus its distribution's version), and one table says which extra of ``pyproject.toml`` provides it,
so every "not installed" message names an extra that exists. Importing a backend must stay cheap
and must work without its compiler installed; the backend then says why it cannot run.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from types import ModuleType

from .errors import MissingDependencyError

# import name -> (distributions that provide it, in order; the extra that installs it). An extra
# of None: a core dependency of sdopt (then the install is broken, and reinstalling fixes it).
PACKAGES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "onnx": (("onnx",), "cpu"),
    "onnxscript": (("onnxscript",), "cpu"),
    "onnxruntime": (("onnxruntime", "onnxruntime-gpu"), "cpu"),
    "openvino": (("openvino",), "cpu"),
    "nncf": (("nncf",), "cpu"),
    "tensorrt": (("tensorrt", "tensorrt-cu13", "tensorrt-cu12"), "gpu"),
    "triton": (("triton",), None),
    # NVML: the device memory a candidate adds (optimize/timing.py); cudaMemGetInfo without it.
    "pynvml": (("nvidia-ml-py", "pynvml"), "gpu"),
    "github": (("PyGithub",), "action"),
    "docker": (("docker",), "reproduce"),
    "DeepCache": (("DeepCache",), "peers"),
    "tomli": (("tomli",), None),
    "jinja2": (("jinja2",), None),
    "plotly": (("plotly",), None),
    "jsonschema": (("jsonschema",), None),
    "pytest_benchmark": (("pytest-benchmark",), None),
    "transformers": (("transformers",), None),
}


def _entry(module: str) -> tuple[tuple[str, ...], str | None]:
    return PACKAGES.get(module.split(".")[0], ((module.split(".")[0],), None))


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version(module: str) -> str | None:
    """The installed version of the distribution providing ``module`` (None: not installed)."""
    for dist in _entry(module)[0]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def install_hint(module: str, extra: str | None = None) -> str:
    """How to get ``module``: the extra of sdopt that provides it (``extra`` overrides the
    table, e.g. onnxruntime from the gpu extra on a GPU machine)."""
    dists, default = _entry(module)
    extra = extra or default
    if extra is None:
        return f"pip install '{dists[0]}' (a dependency of sdopt: reinstalling sdopt fixes it)"
    return f"pip install 'sdopt[{extra}]'"


def unavailable_reason(module: str, purpose: str, *, extra: str | None = None) -> str | None:
    """None when ``module`` is installed, else one line saying what needs it and how to get it."""
    if is_available(module):
        return None
    return (f"{purpose} needs the Python package '{_entry(module)[0][0]}', which is not "
            f"installed: {install_hint(module, extra)}")


def require(module: str, purpose: str, *, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``purpose``, or raise :class:`MissingDependencyError` naming the
    extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(_entry(module)[0][0], purpose,
                                     install_hint(module, extra)) from None
