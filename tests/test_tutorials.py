"""The tutorials run: every code cell of each notebook is executed in order (small settings)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from .conftest import DATA_DIR

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(notebook, tmp_path, monkeypatch, her2st_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HINGE_SC_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("HINGE_TUTORIAL_EPOCHS", "2")
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)  # noqa: S102
    plt.close("all")
    assert (tmp_path / "hinge_tutorial_model" / "manifest.json").is_file()
    assert namespace["per_section"].loc["C6", "n_genes"] == 200
    assert namespace["again"].mean.shape == (namespace["test"].n_obs, 200)
    assert (namespace["again"].mean - namespace["test"].obsm["hinge"]).abs().to_numpy().max() == 0
