"""``hinge_sc.nn`` is the bottom of the stack: no module of it imports ``train``, ``module`` or ``model`` (issue 22).

Every import counts, at module level and inside functions; only imports under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NN = Path(__file__).resolve().parents[2] / "src" / "hinge_sc" / "nn"
#: Packages above ``nn``.
ABOVE = ("hinge_sc.train", "hinge_sc.module", "hinge_sc.model", "hinge_sc.tl", "hinge_sc.pl", "hinge_sc.benchmark",
         "hinge_sc._cli")  # fmt: skip


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or getattr(test, "attr", None) == "TYPE_CHECKING"


def runtime_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute or package-relative import that runs (not under ``TYPE_CHECKING``)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
            else:  # relative to hinge_sc.nn: `..train` is hinge_sc.train
                base = ["hinge_sc", "nn"][: 2 - (node.level - 1)]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def test_the_parser_sees_imports_inside_functions_but_not_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hinge_sc.train import x\n"
        "def f():\n    from hinge_sc.train._pretrain import pretrain_backbone\n    from ..module import y\n"
    )
    assert runtime_imports(source) == [(1, "typing"), (5, "hinge_sc.train._pretrain"), (6, "hinge_sc.module")]


@pytest.mark.parametrize("path", sorted(NN.glob("*.py")), ids=lambda p: p.name)
def test_nn_imports_nothing_above_it(path):
    upward = [
        f"{path.name}:{line} imports {module}"
        for line, module in runtime_imports(path.read_text(encoding="utf-8"))
        if ".".join(module.split(".")[:2]) in ABOVE
    ]
    assert not upward, "\n".join(upward)
