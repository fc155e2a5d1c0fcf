"""The tutorials run: every code cell of each notebook in docs/tutorials is executed (small configuration).

Running them takes minutes per notebook, so ``test_tutorial_runs`` is marked ``tutorial`` and deselected by
default; CI runs it as its own step: ``python -m pytest -m tutorial tests/test_tutorials.py``.

Each notebook runs in its own Jupyter kernel (nbclient) with ``HINGE_TUTORIAL_SMALL=1``; cells tagged
``skip-execution`` (code for GPUs and gated downloads, tutorial 6) are skipped, every other cell must run without
an error output. The committed notebooks are checked too: every code cell that is not tagged has been executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import DATA_DIR

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "docs" / "tutorials").glob("*.ipynb"))
SKIP_TAG = "skip-execution"


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and SKIP_TAG not in c.get("metadata", {}).get("tags", [])]


def _errors(nb) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.fixture(scope="session")
def tutorial_cache(tmp_path_factory) -> Path:
    """Feature cache shared by the notebooks (the first one computes the features, the others reuse them)."""
    return tmp_path_factory.mktemp("tutorial_cache")


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 5, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed(notebook):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(notebook, as_version=4)
    cells = _code_cells(nb)
    assert cells, f"{notebook.name} has no executed code cells"
    unexecuted = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
    assert not unexecuted, f"{notebook.name}: code cells {unexecuted} have no committed outputs; execute it"
    assert not _errors(nb), f"{notebook.name} was committed with errors: {_errors(nb)}"


@pytest.mark.tutorial
@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(notebook, tmp_path, monkeypatch, her2st_path, tutorial_cache):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HINGE_SC_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("HINGE_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("HINGE_TUTORIAL_CACHE", str(tutorial_cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
        skip_cells_with_tag=SKIP_TAG,
    )  # fmt: skip
    client.execute()  # raises CellExecutionError naming the cell and the exception
    assert not _errors(nb)
    executed = _code_cells(nb)
    assert all(c.get("execution_count") is not None for c in executed)
    if notebook.stem.startswith("01_"):
        assert (tmp_path / "hinge_tutorial_model" / "manifest.json").is_file()
        # the reloaded model generated exactly the values written by tl.generate (last cell's output)
        assert executed[-1].outputs[-1]["data"]["text/plain"] == "0.0"
