"""Every runnable Python block of README.md, run in order in one namespace on the shared data (issue 11).

So that the README stays true. A block whose first line is ``# not run in tests`` is skipped: it needs files the
tests do not have (a Visium folder, a whole-slide image, CellFM weights, network). The others run with a tiny
configuration, by plain text substitution (:data:`TINY`): the data path, the epoch count, the size of the random
backbone, the number of samples, sections, views and diffusion steps; everything else runs as written, in a
temporary working folder (the README saves a model there).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "# not run in tests"
#: README text → what the test runs instead (each must occur in the README, so this list cannot go stale).
TINY = {
    '"../shared/data"': None,  # → the tests' data folder
    "model.train()": "model.train(max_epochs=2, lr=1e-2)",
    "nb.train()": "nb.train(max_epochs=2, lr=1e-2)",  # a model that has learnt something: PCA needs non-constant X
    "d_model=128, n_layers=4, n_heads=8": "d_model=16, n_layers=1, n_heads=2",
    'sections=["C2", "C3", "C4", "C5", "C6"]': 'sections=["C5", "C6"]',
    "views=8": "views=1",
    "hs.HINGE(train, backbone, genes=panel": "hs.HINGE(train, backbone, diffusion_steps=5, genes=panel",
    "n_samples=8": "n_samples=2",
    "n_samples=16": "n_samples=2",
    "n_genes=200": "n_genes=40",
}


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_blocks_run(her2st_path, tmp_path, monkeypatch):
    text = README.read_text()
    blocks = [b for b in python_blocks(text) if not b.lstrip().startswith(SKIP_MARK)]
    assert len(blocks) >= 2  # the Quick example and the evaluation block at least
    code = "\n".join(blocks)
    for old, new in TINY.items():
        assert old in code, f"{old!r} is no longer in the README's runnable blocks; update TINY"
        code = code.replace(old, repr(str(her2st_path.parent)) if new is None else new)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    plt.close("all")
    gen, test, model = namespace["gen"], namespace["test"], namespace["model"]
    assert "ERBB2" in gen.var_names and gen.n_obs == test.n_obs and "moranI" in gen.uns
    assert (tmp_path / "hinge_model" / "manifest.json").is_file()
    assert namespace["mean"].shape == (test.n_obs, len(namespace["panel"]))


@pytest.mark.parametrize("block", python_blocks(README.read_text()))
def test_skipped_blocks_say_why(block):
    """Only blocks that need files the tests lack are skipped, and they say so on their first line."""
    if block.lstrip().startswith(SKIP_MARK):
        assert "needs" in block.splitlines()[0]
