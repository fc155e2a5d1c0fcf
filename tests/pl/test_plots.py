"""Smoke tests of the evaluation plots on real her2st sections (C2, C3)."""

from __future__ import annotations

from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import hinge_sc as hs


@pytest.fixture(scope="module")
def evaluated(her2st_c):
    """Two fake methods on 30 well-expressed genes: 'good' (measured + noise) and 'noisy'."""
    adata = her2st_c.copy()
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    genes = list(adata.var_names[np.argsort(-x.mean(0))[:30]])
    measured = np.log2(adata[:, genes].X.toarray() + 1)
    rng = np.random.default_rng(0)
    for key, noise in (("good", 0.3), ("noisy", 1.5)):
        adata.obsm[key] = pd.DataFrame(
            measured + rng.normal(scale=noise, size=measured.shape), index=adata.obs_names, columns=genes
        )
        hs.tl.evaluate(adata, key=key, spatial_key=None)
    return adata


def test_coexpression_writes_file(evaluated, tmp_path):
    fig = hs.pl.coexpression(evaluated, key="good", section="C3", save=tmp_path / "co.png")
    assert isinstance(fig, Figure) and (tmp_path / "co.png").stat().st_size > 0
    heatmaps = [a for a in fig.axes if a.get_title() in ("measured", "generated")]
    assert len(heatmaps) == 2 and heatmaps[0].images[0].get_array().shape == (30, 30)
    assert "C3" in fig._suptitle.get_text() and "r = " in fig._suptitle.get_text()
    plt.close(fig)


def test_coexpression_gene_subset_into_axes(evaluated):
    fig, axes = plt.subplots(1, 2)
    genes = list(evaluated.obsm["good"].columns[:5])
    out = hs.pl.coexpression(evaluated, genes, key="noisy", ax=axes, cluster=False, scale="log1p_cp10k")
    assert out is fig
    assert [t.get_text() for t in axes[0].get_xticklabels()] == genes
    with pytest.raises(ValueError, match="`ax` must be two Axes"):
        hs.pl.coexpression(evaluated, key="good", ax=axes[0])
    plt.close(fig)


def test_coexpression_library_id_is_a_deprecated_alias_of_section(evaluated):
    # issue 10: one name per concept; `library_id` still works for one release
    with pytest.warns(FutureWarning, match="library_id"):
        fig = hs.pl.coexpression(evaluated, key="good", library_id="C3")
    assert fig._suptitle.get_text().startswith("C3 · ")
    plt.close(fig)


def test_coexpression_errors(evaluated):
    with pytest.raises(KeyError, match="hs.tl.generate"):
        hs.pl.coexpression(evaluated, key="nope")
    with pytest.raises(KeyError, match="'FOO'"):
        hs.pl.coexpression(evaluated, ["FOO"], key="good")


@pytest.mark.parametrize("kind", ["rank", "ecdf", "box"])
def test_gene_scores_overlays_methods(evaluated, kind, tmp_path):
    ax = hs.pl.gene_scores(evaluated, ["good", "noisy"], kind=kind, top_k=10, save=tmp_path / f"{kind}.png")
    assert isinstance(ax, Axes) and (tmp_path / f"{kind}.png").stat().st_size > 0
    if kind != "box":
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith("good (mean") and labels[1].startswith("noisy (mean")
        assert len(ax.lines) >= 2
    plt.close(ax.figure)


def test_gene_scores_from_a_table_and_one_section(evaluated):
    table = pd.concat(
        [evaluated.uns[f"{k}_evaluation"]["per_gene"].assign(method=k) for k in ("good", "noisy")]
    )
    ax = hs.pl.gene_scores(table, section="C2", metric="spearman")
    good = np.sort(table[(table["method"] == "good") & (table["section"] == "C2")]["spearman"].to_numpy())[::-1]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), good)
    assert ax.get_title() == "per-gene spearman (C2)"
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="run `hs.tl.evaluate"):
        hs.pl.gene_scores(evaluated, "missing")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        hs.pl.gene_scores(evaluated, kind="violin")


def test_training_history(tmp_path):
    class Trained:
        history: ClassVar[dict] = {
            "train_loss": pd.DataFrame({"train_loss": [3.0, 2.0, 1.5]}),
            "validation_loss": pd.DataFrame({"validation_loss": [3.2, 2.5, 2.6]}),
        }
        train_params_: ClassVar[dict] = {"best_epoch": 1}

    ax = hs.pl.training_history(Trained(), save=tmp_path / "history.png")
    assert [line.get_label() for line in ax.lines[:2]] == ["train_loss", "validation_loss"]
    assert ax.get_title() == "training (best epoch 1)" and (tmp_path / "history.png").is_file()
    plt.close(ax.figure)
    ax = hs.pl.training_history({"loss": [1.0, 0.5]}, metrics=["loss"], log_y=True)
    assert ax.get_yscale() == "log"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="no training history"):
        hs.pl.training_history(object())
    with pytest.raises(ValueError, match="None of `metrics"):
        hs.pl.training_history({"loss": [1.0]})
