"""The layer rule of docs/architecture.md, checked on the import graph of ``src/hinge_sc`` (issue 10).

Runtime imports count (module level and inside functions); imports under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hinge_sc"

#: Rank of each layer: a file may import only from its own layer or lower ones.
LAYERS = {"floor": 0, "nn": 1, "module": 2, "train": 3, "model": 4, "tl": 5, "pl": 5, "benchmark": 5, "cli": 6}
#: Preprocessing, readers and data sets sit beside the stack: they import the floor, the pure-torch ``nn`` (gene
#: vocabularies) and each other; only ``model`` and the layers above it import them.
SIDE = {"pp", "io", "datasets"}
SIDE_MAY_IMPORT = {"floor", "nn"}
#: The one import that goes up, inside a function: ``Backbone.pretrain`` is a thin entry point to
#: ``hinge_sc.train.pretrain_backbone`` (the issue allows it: not at module level).
ALLOWED_UPWARD = {("hinge_sc.nn._backbone", "hinge_sc.train._pretrain")}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__",):
        return "package"
    if parts[1] == "_cli":
        return "cli"
    if parts[1].startswith("_"):
        return "floor"
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports(ast.NodeVisitor):
    def __init__(self, current: str, is_package: bool):
        self.current, self.is_package = current, is_package
        self.found: list[tuple[str, bool]] = []  # (imported module, at module level?)
        self.depth = 0

    def visit_If(self, node: ast.If):
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            if alias.name.startswith("hinge_sc"):
                self.found.append((alias.name, self.depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        target = _resolve(node, self.current, self.is_package)
        if target and target.startswith("hinge_sc"):
            for alias in node.names:  # `from hinge_sc.nn import _backbone` imports a submodule
                sub = f"{target}.{alias.name}"
                exists = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file()
                self.found.append((sub if exists else target, self.depth == 0))


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    """File module → the hinge_sc modules it imports at run time, with whether the import is at module level."""
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = visitor.found
    return graph


def _file_of(module: str, graph) -> str:
    """The file module an import lands in (a package import lands in its ``__init__``)."""
    while module not in graph and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def _violation(src: str, dst: str) -> str | None:
    a, b = _layer(src), _layer(dst)
    if "package" in (a, b) or a == b:
        return None
    if a in SIDE or b in SIDE:
        if a in SIDE and b not in SIDE and b not in SIDE_MAY_IMPORT:
            return f"{src} ({a}, beside the stack) imports {dst} ({b})"
        if b in SIDE and a in ("nn", "module", "train", "floor"):
            return f"{src} ({a}) imports {dst} ({b}); only model and above may use {b}"
        return None
    if LAYERS[b] > LAYERS[a]:
        return f"{src} ({a}) imports {dst} ({b}), a higher layer"
    return None


def test_no_upward_imports():
    graph = import_graph()
    problems = []
    for src, imports in graph.items():
        for dst, _top in imports:
            dst = _file_of(dst, graph)
            message = _violation(src, dst)
            if message and (src, dst) not in ALLOWED_UPWARD:
                problems.append(message)
    assert not problems, "\n".join(sorted(set(problems)))


def test_allowed_upward_import_is_not_at_module_level():
    graph = import_graph()
    for src, dst in ALLOWED_UPWARD:
        levels = [top for target, top in graph[src] if _file_of(target, graph) == dst]
        assert levels and not any(levels), f"{src} must import {dst} inside a function only"


def test_no_file_cycles():
    """No two files import each other, directly or through others (the allowed lazy entry point aside)."""
    graph = import_graph()
    edges = {
        src: {_file_of(dst, graph) for dst, _ in imports} - {src} - {d for s, d in ALLOWED_UPWARD if s == src}
        for src, imports in graph.items()
        if not src.endswith("__init__")
    }
    edges = {k: {d for d in v if d in edges} for k, v in edges.items()}  # package __init__ re-exports excluded
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("package", ["hinge_sc.nn", "hinge_sc.module"])
def test_bottom_layers_load_neither_lightning_nor_scvi(package):
    code = f"import sys, {package}; print(sorted(m for m in ('lightning', 'scvi', 'anndata') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing {package} loaded {out}"


def test_predictions_are_written_in_one_place():
    writers = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "obsm[key_added] =" in path.read_text(encoding="utf-8") or "obsm[key] = values[key]" in path.read_text()
    ]
    assert writers == ["tl/_write.py"] or set(writers) <= {"tl/_write.py", "pp/_features.py"}, writers
