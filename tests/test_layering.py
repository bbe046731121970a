"""The layer rules of the package, read from the import graph (``ast``; module-level and
function-level imports alike, since a lazy import is still a dependency).

Layers, top to bottom (DESIGN.md section 2): cli and the Action -> report -> gate -> optimize ->
techniques -> backends -> the base modules. An import never runs upward; subpackages import each
other without cycles; no module imports a private name (``_x``, or a private module) that
belongs to another module. Each rule is shown to fire on a synthetic tree, so the test cannot
pass by reading nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (layer, module prefixes), bottom first. The root package ``sdopt`` (the public facade:
# optimize_model, load_pipeline...) sits on top: nothing inside the package may import it.
LAYERS = [
    ("base", ("sdopt.errors", "sdopt.version", "sdopt.deps", "sdopt.identity", "sdopt.device",
              "sdopt.host_memory", "sdopt.cgroups", "sdopt.cpu_threads",
              "sdopt.store", "sdopt.cache", "sdopt.models", "sdopt.templates", "sdopt.logs",
              "sdopt.allocator", "sdopt.privacy")),
    ("backends", ("sdopt.backends",)),
    ("techniques", ("sdopt.techniques",)),
    ("optimize", ("sdopt.optimize",)),
    ("gate", ("sdopt.gate",)),
    ("report", ("sdopt.report",)),
    ("cli", ("sdopt.cli", "action")),
    ("facade", ("sdopt",)),
]


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    names: tuple[str, ...]  # names imported from it ("" for a plain import)
    where: str  # file:line


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_edges(root: Path, packages: tuple[str, ...]) -> list[Edge]:
    """Every import between modules of ``packages`` (folders under ``root``)."""
    edges = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            is_pkg = path.name == "__init__.py"
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] in packages:
                            edges.append(Edge(name, alias.name, ("",), where))
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = name.split(".") if is_pkg else name.split(".")[:-1]
                        base = base[:len(base) - (node.level - 1)]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    if target.split(".")[0] not in packages:
                        continue
                    names = tuple(a.name for a in node.names)
                    # "from pkg import module" imports the module itself.
                    modules = [n for n in names if _is_module(root, f"{target}.{n}")]
                    for sub in modules:
                        edges.append(Edge(name, f"{target}.{sub}", ("",), where))
                    rest = tuple(n for n in names if n not in modules)
                    if rest or not modules:
                        edges.append(Edge(name, target, rest, where))
    return edges


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str, layers=LAYERS) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def upward_imports(edges: list[Edge], layers=LAYERS) -> list[str]:
    out = []
    for e in edges:
        low, high = layer_of(e.source, layers), layer_of(e.target, layers)
        if high > low:
            out.append(f"{e.where}: {e.source} ({layers[low][0]}) imports {e.target} "
                       f"({layers[high][0]})")
    return out


def unit_of(module: str) -> str:
    """The node of the cycle check: a subpackage (sdopt.gate), or a base module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def subpackage_cycles(edges: list[Edge]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        a, b = unit_of(e.source), unit_of(e.target)
        if a != b:
            graph.setdefault(a, set()).add(b)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def private_imports(edges: list[Edge]) -> list[str]:
    """Private names taken from another module, and private modules taken from outside their
    own package."""
    out = []
    for e in edges:
        for name in e.names:
            if name.startswith("_") and not name.startswith("__"):
                out.append(f"{e.where}: {e.source} imports the private name {name} of {e.target}")
        parts = e.target.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not (e.source == owner or e.source.startswith(owner + ".")):
                    out.append(f"{e.where}: {e.source} imports the private module {e.target}")
    return out


def _sdopt_edges() -> list[Edge]:
    return import_edges(ROOT, ("sdopt", "action"))


def test_no_layer_imports_a_higher_one():
    assert upward_imports(_sdopt_edges()) == []


def test_subpackages_import_each_other_without_cycles():
    assert subpackage_cycles(_sdopt_edges()) == []


def test_no_module_imports_a_private_name_of_another():
    assert private_imports(_sdopt_edges()) == []


def test_benchmarks_and_test_scripts_use_public_names_only():
    edges = [e for e in import_edges(ROOT, ("benchmarks", "tests", "sdopt"))
             if e.source.startswith(("benchmarks", "tests.scripts"))
             and e.target.split(".")[0] == "sdopt"]
    assert edges, "the benchmarks import sdopt: the check must see them"
    assert private_imports(edges) == []


# --- the rules fire on a synthetic tree -----------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


SYNTHETIC_LAYERS = [("low", ("pkg.low",)), ("high", ("pkg.high",)), ("facade", ("pkg",))]
CLEAN = {"pkg/__init__.py": "", "pkg/low/__init__.py": "", "pkg/low/core.py": "X = 1\n",
         "pkg/high/__init__.py": "", "pkg/high/use.py": "from ..low.core import X\n"}


def test_the_rules_pass_a_clean_tree(tmp_path):
    edges = import_edges(_tree(tmp_path, CLEAN), ("pkg",))
    assert [e.target for e in edges] == ["pkg.low.core"]
    assert upward_imports(edges, SYNTHETIC_LAYERS) == []
    assert subpackage_cycles(edges) == []
    assert private_imports(edges) == []


def test_an_upward_import_is_caught_even_inside_a_function(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "pkg/low/core.py":
                            "X = 1\n\ndef f():\n    from ..high import use\n    return use\n"})
    found = upward_imports(import_edges(root, ("pkg",)), SYNTHETIC_LAYERS)
    assert len(found) == 1 and "pkg.low.core (low) imports pkg.high.use (high)" in found[0]


def test_a_cycle_between_subpackages_is_caught(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "pkg/low/core.py": "from pkg.high.use import X\n"})
    edges = import_edges(root, ("pkg",))
    assert subpackage_cycles(edges) == [["pkg.high", "pkg.low", "pkg.high"]]


def test_a_private_import_across_modules_is_caught(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "pkg/low/core.py": "X = 1\n_secret = 2\n",
                            "pkg/low/_impl.py": "Y = 1\n",
                            "pkg/low/friend.py": "from ._impl import Y\n",
                            "pkg/high/use.py": "from ..low.core import X, _secret\n"
                                               "from ..low._impl import Y\n"})
    found = private_imports(import_edges(root, ("pkg",)))
    assert len(found) == 2, found  # the package's own use of its private module is fine
    assert "private name _secret" in found[0] and "private module pkg.low._impl" in found[1]
