"""Every third-party package the source imports is declared in pyproject.toml (issue 11: scikit-learn was not)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hinge_sc"
#: Import name → distribution name, where they differ.
DISTRIBUTION = {"PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn", "scvi": "scvi-tools",
                "huggingface_hub": "huggingface-hub", "yaml": "pyyaml", "mpl_toolkits": "matplotlib"}  # fmt: skip
#: Imported only inside optional code paths that say how to install them, and not on PyPI under that name.
NOT_ON_PYPI = {"conch"}  # CONCH is installed from its GitHub repository (see hinge_sc.pp.load_encoder)


def imported_packages() -> set[str]:
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("hinge_sc", "__future__")}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for deps in project["optional-dependencies"].values() for d in deps]
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_every_import_is_declared():
    missing = sorted(
        name for name in imported_packages() - NOT_ON_PYPI if DISTRIBUTION.get(name, name).lower() not in declared()
    )
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_scikit_learn_is_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("scikit-learn") for d in project["dependencies"])
