from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs
from hinge_sc.pp._genes import _mean_std_intersection


@pytest.fixture
def adata(her2st_c):
    return her2st_c.copy()


def test_hmhvg_panel_on_real_sections(adata):
    vocabulary = list(adata.var_names[:8000])
    with pytest.warns(UserWarning, match="not in the backbone vocabulary"):
        panel = hs.pp.select_genes(adata, n_genes=100, vocabulary=vocabulary)
    assert len(panel) == len(set(panel)) == 100
    assert set(panel) <= set(vocabulary)
    assert not any(g.startswith(("MT-", "RPS", "RPL")) for g in panel)
    assert adata.var["hinge_panel"].sum() == 100
    means = np.asarray(adata[:, panel].X.mean(0)).ravel()
    assert np.all(np.diff(means) <= 1e-6)  # ordered by decreasing mean


@pytest.mark.parametrize("method", ["hvg", "highly_expressed"])
def test_other_methods(adata, method):
    panel = hs.pp.select_genes(adata, n_genes=50, method=method, section_key=None)
    assert len(panel) == 50


def test_mean_std_intersection_is_smallest_k():
    import pandas as pd

    stats = pd.DataFrame({"mean": [5, 4, 3, 2, 1.0], "std": [1, 5, 4, 3, 2.0]}, index=list("abcde"))
    # ranks by mean: a1 b2 c3 d4 e5; by std: b1 c2 d3 e4 a5 -> worst: a5 b2 c3 d4 e5
    assert _mean_std_intersection(stats, 2) == ["b", "c"]
    assert _mean_std_intersection(stats, 3) == ["b", "c", "d"]


def test_errors(adata):
    hs.pp.select_genes(adata, n_genes=10, method="highly_expressed")
    with pytest.raises(KeyError, match="overwrite=True"):
        hs.pp.select_genes(adata, n_genes=10)
    with pytest.raises(KeyError, match="section_key='batch'"):
        hs.pp.select_genes(adata, n_genes=10, section_key="batch", key_added="p2")
    with pytest.raises(ValueError, match="method"):
        hs.pp.select_genes(adata, n_genes=10, method="random", key_added="p3")


def test_vocabulary_matching_follows_the_model(adata):
    """A gene renamed in the vocabulary (data: old symbol) qualifies, as it does in the model's panel check."""
    assert "ERBB2" in adata.var_names
    adata = adata.copy()
    adata.var_names = ["erbb2_old" if g == "ERBB2" else g for g in adata.var_names]
    top = list(adata.var_names[np.argsort(-np.asarray(adata.X.mean(0)).ravel())][:300])
    vocabulary = [g.upper() for g in top if g != "erbb2_old"] + ["ERBB2_NEW"]
    aliases = {"ERBB2_OLD": "ERBB2_NEW"}
    with pytest.warns(UserWarning, match="not in the backbone vocabulary"):
        panel = hs.pp.select_genes(adata, n_genes=40, method="highly_expressed", vocabulary=vocabulary,
                                   aliases=aliases)
    assert "erbb2_old" in panel  # matched by renamed symbol
    assert all(g.upper() in vocabulary for g in panel if g != "erbb2_old")  # the others by case
    with pytest.warns(UserWarning, match="not in the backbone vocabulary"):
        strict = hs.pp.select_genes(adata, n_genes=40, method="highly_expressed", vocabulary=vocabulary,
                                    aliases=False, key_added="strict")
    assert "erbb2_old" not in strict
    backbone = hs.Backbone.random(vocabulary, d_model=16, n_layers=1, n_heads=2)
    with pytest.warns(UserWarning, match="not in the backbone vocabulary"):
        via_backbone = hs.pp.select_genes(adata, n_genes=40, method="highly_expressed", vocabulary=backbone,
                                          aliases=aliases, key_added="bb")
    assert via_backbone == panel
    ids, report = backbone.match_genes(panel, aliases=aliases)
    assert (ids > 0).all()
    with pytest.raises(TypeError, match="single string"):
        hs.pp.select_genes(adata, vocabulary="ERBB2", key_added="x")
