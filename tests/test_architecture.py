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
            if message:
                problems.append(message)
    assert not problems, "\n".join(sorted(set(problems)))


def test_no_file_cycles():
    """No two files import each other, directly or through others (also inside functions)."""
    graph = import_graph()
    edges = {
        src: {_file_of(dst, graph) for dst, _ in imports} - {src}
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


# ---------------------------------------------------------------------------------------------- benchmarks/ (issue 22)
BENCHMARKS = SRC.parents[1] / "benchmarks"
#: What a benchmark script may import from the package: the package and its public subpackages.
PUBLIC_PACKAGES = {"pp", "tl", "pl", "io", "datasets", "benchmark", "model", "train", "nn", "module"}
#: ``AnnData`` slots a benchmark script must not write results into by hand (the package's writers do).
RESULT_SLOTS = {"obsm", "uns"}


def _benchmark_scripts() -> list[Path]:
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts, f"no benchmark scripts in {BENCHMARKS}"
    return scripts


def _package_aliases(tree: ast.Module) -> set[str]:
    """Names a script binds to ``hinge_sc`` or one of its subpackages (``import hinge_sc as hs`` → ``hs``)."""
    names = {"hinge_sc"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] == "hinge_sc"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "hinge_sc":
            names |= {a.asname or a.name for a in node.names}
    return names


def _private_uses(path: Path) -> list[str]:
    """Imports of private package modules or names, and ``hs._x`` attribute chains, in one script."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def check_module(module: str, line: int) -> None:
        parts = module.split(".")
        if parts[0] != "hinge_sc":
            return
        if any(p.startswith("_") for p in parts[1:]) or (len(parts) > 1 and parts[1] not in PUBLIC_PACKAGES):
            found.append(f"{path.name}:{line} imports {module}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            check_module(node.module, node.lineno)
            if node.module.split(".")[0] == "hinge_sc":
                found += [f"{path.name}:{node.lineno} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_")]  # fmt: skip
    aliases = _package_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{path.name}:{node.lineno} uses {ast.unparse(node)}")
    return found


def _result_writes(path: Path) -> list[str]:
    """Assignments into ``<x>.obsm[...]`` / ``<x>.uns[...]`` (also nested, augmented or via ``update``/``setdefault``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def slot(target: ast.AST) -> str | None:
        while isinstance(target, ast.Subscript):
            target = target.value
            if isinstance(target, ast.Attribute) and target.attr in RESULT_SLOTS:
                return target.attr
        return None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for t in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
                if slot(t):
                    found.append(f"{path.name}:{node.lineno} writes {ast.unparse(t)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "setdefault")
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in RESULT_SLOTS
        ):
            found.append(f"{path.name}:{node.lineno} writes {ast.unparse(node.func)}(...)")
    return found


def test_benchmarks_use_only_the_public_api():
    """``benchmarks/*.py`` import the package and its public subpackages, never a module or name starting with ``_``."""
    problems = [p for path in _benchmark_scripts() for p in _private_uses(path)]
    assert not problems, "\n".join(problems)


def test_benchmarks_write_results_through_the_package():
    """No benchmark script writes ``obsm``/``uns`` of an AnnData by hand: ``hs.tl.generate``, the baselines'
    ``predict`` and ``hs.tl.write_prediction`` write predictions (one writer, ``tl/_write.py``)."""
    problems = [p for path in _benchmark_scripts() for p in _result_writes(path)]
    assert not problems, "\n".join(problems)


def test_benchmark_helpers_are_defined_once():
    """No two benchmark files define a top-level function of the same name (a second ``train_hinge`` or ``score``
    is a copy: shared helpers live in ``benchmarks/_common.py``)."""
    seen: dict[str, list[str]] = {}
    for path in _benchmark_scripts():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in ("main", "parse_args"):
                seen.setdefault(node.name, []).append(path.name)
    copies = {name: files for name, files in seen.items() if len(files) > 1}
    assert not copies, copies


def test_checks_of_benchmarks_catch_what_they_forbid(tmp_path):
    """The checks above flag private imports and hand-written result slots (so a passing run means something)."""
    script = tmp_path / "bad.py"
    script.write_text(
        "import hinge_sc as hs\nfrom hinge_sc.tl._metrics import pcc_top_k\nfrom hinge_sc.pp import _encoders\n"
        "import hinge_sc._random\nx = hs.tl._write\nadata.obsm['h'] = 1\nadata.uns['h']['params'] = {}\n"
        "a.obsm['x'], b = 1, 2\nadata.uns.update(h=1)\nadata.obs['ok'] = 1\n"
    )
    assert len(_private_uses(script)) == 4
    assert len(_result_writes(script)) == 4
