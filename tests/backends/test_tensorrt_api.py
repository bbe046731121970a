"""sdopt's TensorRT calls and its test fake, checked against the real TensorRT bindings.

The image pins tensorrt-cu13 11.4 (the Dockerfile); its Python API is read from NVIDIA's
bindings wheel (see ``tensorrt_api.py``), so a class, enum member, method or parameter that
TensorRT renames or removes fails here, on a machine without a GPU. Skipped, with the reason,
where the wheel cannot be downloaded.
"""

import ast
import enum
import inspect
import re
from pathlib import Path

import pytest

from . import fake_tensorrt
from .tensorrt_api import TENSORRT_VERSION, real_api, signatures

ROOT = Path(__file__).parents[2]
SOURCES = [ROOT / "sdopt" / "backends" / "tensorrt.py"]


def test_the_checked_version_is_the_dockerfiles_pin():
    pin = re.search(r"^ARG TENSORRT_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(),
                    re.MULTILINE)
    assert pin and pin.group(1) == TENSORRT_VERSION == fake_tensorrt.__version__


def _trt_chains(path: Path) -> set[tuple[str, ...]]:
    """Every ``trt.A`` / ``trt.A.B`` the module reads (``import tensorrt as trt``)."""
    chains = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "trt":
                chains.add(tuple(parts[:2]))
    return chains


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_sdopt_reads_only_names_the_real_module_has(path):
    api = real_api()
    chains = _trt_chains(path)
    assert ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") in chains
    missing = []
    for chain in sorted(chains):
        head = chain[0]
        if head in api["module"] or head == "__version__":
            continue
        if head not in api["classes"]:
            missing.append(".".join(chain))
        elif len(chain) > 1 and chain[1] not in api["classes"][head]["members"]:
            missing.append(".".join(chain))
    assert not missing, f"TensorRT {api['version']} has no {missing}"


def test_tensorrt_11_has_no_precision_builder_flags():
    """Why sdopt builds strongly typed networks: the flags the TensorRT 10 recipe set are gone."""
    flags = real_api()["classes"]["BuilderFlag"]["enum"]
    assert not {"FP16", "INT8", "FP8", "BF16"} & set(flags)
    assert "STRONGLY_TYPED" in real_api()["classes"]["NetworkDefinitionCreationFlag"]["enum"]


def _fake_members(cls) -> dict[str, object]:
    members = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ != fake_tensorrt.__name__:
            continue
        for name, value in vars(klass).items():
            if name == "__init__" or not name.startswith("_"):
                members[name] = value
    return members


def _kind(value) -> str:
    if isinstance(value, property):
        return "property"
    if isinstance(value, type):
        return "class"
    if inspect.isfunction(value):
        return "method"
    return "value"


FAKE_CLASSES = [getattr(fake_tensorrt, n) for n in fake_tensorrt.__all__
                if isinstance(getattr(fake_tensorrt, n), type)]


@pytest.mark.parametrize("cls", FAKE_CLASSES, ids=lambda c: c.__name__)
def test_the_fake_follows_the_real_api(cls):
    api = real_api()
    name = cls.__name__
    if name == "INetworkDefinition":  # sdopt only passes it along; the real one is vast
        assert name in api["classes"]
        return
    assert name in api["classes"], f"TensorRT {api['version']} has no class {name}"
    real = api["classes"][name]
    if issubclass(cls, enum.Enum):
        fake = {m.name: int(m.value) for m in cls}
        wrong = {k: v for k, v in fake.items() if real["enum"].get(k) != v}
        assert not wrong, f"{name}: real values {real['enum']}, fake {fake}"
        return
    problems = []
    for member, value in _fake_members(cls).items():
        got = real["members"].get(member)
        if got is None:
            problems.append(f"{name}.{member} does not exist")
            continue
        kind = _kind(value)
        if kind != got["kind"] and not (kind == "value" and got["kind"] == "value"):
            problems.append(f"{name}.{member} is a {got['kind']}, the fake has a {kind}")
        if kind == "method":
            params = [p for p in inspect.signature(value).parameters if p != "self"]
            overloads = signatures(got["doc"], member)
            if member == "__init__" and not overloads:
                continue  # not constructible from Python: the fake's own way to make one
            if params not in overloads:
                problems.append(f"{name}.{member}{tuple(params)}: real overloads {overloads}")
    assert not problems, problems


def _constructed(path: Path) -> set[str]:
    """The ``trt.<Class>(...)`` sdopt calls directly."""
    return {node.func.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "trt"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_sdopt_constructs_only_classes_python_can_construct(path):
    """The others (engines, contexts, host memory) come from TensorRT's factories; the fake's
    constructors for them are its own, so sdopt must not call them."""
    api = real_api()
    for name in _constructed(path):
        doc = api["classes"].get(name, {}).get("members", {}).get("__init__", {}).get("doc")
        assert signatures(doc, "__init__"), f"trt.{name}(...) cannot be constructed"
