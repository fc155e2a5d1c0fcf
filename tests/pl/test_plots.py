"""Smoke tests of the evaluation plots on real her2st sections (C2, C3)."""

from __future__ import annotations

from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

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
    axes = hs.pl.coexpression(evaluated, key="good", section="C3", save=tmp_path / "co.png")
    assert [a.get_title() for a in axes] == ["measured", "generated"] and all(isinstance(a, Axes) for a in axes)
    assert (tmp_path / "co.png").stat().st_size > 0
    assert axes[0].images[0].get_array().shape == (30, 30)
    fig = axes[0].figure
    # depth-normalised by default, and the title says so
    assert "C3" in fig._suptitle.get_text() and "r = " in fig._suptitle.get_text()
    assert "ln(1 + counts per 10k)" in fig._suptitle.get_text()
    assert fig.axes[-1].get_ylabel() == "Pearson r"
    raw = hs.pl.coexpression(evaluated, key="good", section="C3", scale="log2p1")
    assert "log2(count+1)" in raw[0].figure._suptitle.get_text()
    # on raw log counts every pair correlates through sequencing depth: a higher mean correlation
    upper = np.triu_indices(30, 1)
    assert raw[0].images[0].get_array()[upper].mean() > axes[0].images[0].get_array()[upper].mean()
    plt.close("all")


def test_plots_returned_figure_still_works_with_a_warning(evaluated, tmp_path):
    axes = hs.pl.coexpression(evaluated, key="good", section="C3")
    with pytest.warns(FutureWarning, match=r"plots return their Axes"):
        axes.savefig(tmp_path / "old.png")  # 0.1 returned the Figure
    assert (tmp_path / "old.png").is_file()
    plt.close(axes.figure)


def test_coexpression_gene_subset_into_axes(evaluated):
    fig, axes = plt.subplots(1, 2)
    genes = list(evaluated.obsm["good"].columns[:5])
    out = hs.pl.coexpression(evaluated, genes, key="noisy", ax=axes, cluster=False, scale="log1p_cp10k")
    assert list(out) == list(axes) and out.figure is fig
    assert [t.get_text() for t in axes[0].get_xticklabels()] == genes
    with pytest.raises(ValueError, match="`ax` must be two Axes"):
        hs.pl.coexpression(evaluated, key="good", ax=axes[0])
    plt.close(fig)


def test_coexpression_library_id_is_a_deprecated_alias_of_section(evaluated):
    # issue 10: one name per concept; `library_id` still works for one release
    with pytest.warns(FutureWarning, match="library_id"):
        axes = hs.pl.coexpression(evaluated, key="good", library_id="C3")
    assert axes.figure._suptitle.get_text().startswith("C3 · ")
    plt.close(axes.figure)


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
            "train_loss": pd.DataFrame({"train_loss": [3.0, 2.0, 1.5, 1.4]}),
            "validation_loss": pd.DataFrame({"validation_loss": [3.2, 2.5, 2.6, 2.55]}),
            "t_max": pd.DataFrame({"t_max": [5.0, 5.0, 50.0, 50.0]}),
        }
        train_params_: ClassVar[dict] = {"best_epoch": 1}

    axes = hs.pl.training_history(Trained(), save=tmp_path / "history.png")
    # two panels: the losses are on different t distributions and are not drawn as comparable
    assert len(axes) == 2 and (tmp_path / "history.png").is_file()
    assert axes[0].get_title().startswith("training loss (t ≤ t_max")
    assert axes[1].get_title().startswith("validation loss (uniform t")
    assert [line.get_label() for line in axes[0].lines] == ["train_loss"]
    assert axes[0].patches and axes[0].patches[0].get_label() == "warm-up epochs"  # epochs 0–1
    assert "best epoch (1)" in [line.get_label() for line in axes[1].lines]
    assert axes[0].figure._suptitle.get_text() == "training (best epoch 1)"
    plt.close(axes.figure)
    _, one = plt.subplots()
    out = hs.pl.training_history(Trained(), ax=one)  # one Axes: both curves, labelled by their t distribution
    assert list(out) == [one] and one.get_legend().get_texts()[0].get_text().startswith("training loss (t ≤")
    with pytest.warns(FutureWarning):
        assert out.get_title() == "training (best epoch 1)"  # 0.1 returned the Axes
    plt.close(one.figure)
    axes = hs.pl.training_history({"loss": [1.0, 0.5]}, metrics=["loss"], log_y=True)
    assert len(axes) == 1 and axes[0].get_yscale() == "log"
    plt.close(axes.figure)
    with pytest.raises(ValueError, match="no training history"):
        hs.pl.training_history(object())
    with pytest.raises(ValueError, match="None of `metrics"):
        hs.pl.training_history({"loss": [1.0]})
