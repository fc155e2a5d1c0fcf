"""The negative-binomial likelihood on real her2st counts: trains, generates counts, passes scvi-tools' posterior
predictive check (issue 22)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs

from ..conftest import DATA_DIR


@pytest.fixture(scope="module")
def nb_model(her2st_c):
    adata = her2st_c[her2st_c.obs["section"].isin(["C2", "C3"])].copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    train = adata[adata.obs["section"] == "C2"].copy()
    test = adata[adata.obs["section"] == "C3"].copy()
    vocabulary = pd.read_csv(DATA_DIR / "vocab" / "cellfm" / "gene_info.csv", usecols=[0]).iloc[:, 0].tolist()
    backbone = hs.Backbone.random(vocabulary, d_model=32, n_layers=2, n_heads=4, seed=0)
    panel = hs.pp.select_genes(train, n_genes=30, section_key=None, vocabulary=backbone)
    hs.HINGE.setup_anndata(train, features_key="X_histology", section_key="section")
    model = hs.HINGE(train, backbone, genes=panel, likelihood="nb", diffusion_steps=10)
    model.train(max_epochs=3, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    return model, train, test


def test_nb_model_trains_and_draws_counts(nb_model):
    model, train, test = nb_model
    assert model.module.likelihood.name == "nb"
    assert {"nll_train", "nll_validation"} <= set(model.history)
    assert float(model.module.likelihood.reference_library) == pytest.approx(float(np.median(np.asarray(train.X.sum(1)).ravel())), rel=0.05)
    out = model.generate(test, n_samples=4, seed=0, return_samples=True, show_progress_bar=False)
    counts = np.exp2(out.samples) - 1  # log2(count + 1) of drawn counts (spread calibration aside)
    assert np.isfinite(out.samples).all() and (out.samples >= 0).all()
    pp = model.posterior_predictive_sample(test, n_samples=3, seed=0)
    dense = pp.todense()
    assert dense.shape == (test.n_obs, len(model.panel_genes_), 3)
    assert np.array_equal(dense, np.rint(dense)) and (dense >= 0).all()
    assert dense.mean() > 0 and counts.mean() > 0


def test_posterior_predictive_check_runs_on_a_hinge_model(nb_model):
    """scvi-tools' PPC on real counts. Two limitations of scvi-tools 1.4 are worked around: ``calibration_error``
    reads ``quants.model1`` only, so the model is named ``"model1"``; its integer check fails on float sparse
    counts, so the counts are given as integers."""
    from scvi.criticism import PosteriorPredictiveCheck

    model, train, _ = nb_model
    counts = train[:, model.panel_genes_].copy()
    counts.X = counts.X.astype(np.int64)  # scvi-tools 1.4's integer check fails on float sparse matrices
    ppc = PosteriorPredictiveCheck(counts, {"model1": model}, n_samples=4)
    ppc.coefficient_of_variation("features")
    ppc.zero_fraction()
    ppc.calibration_error()
    cv = ppc.metrics["cv_cell"]
    assert {"model1", "Raw"} <= set(cv.columns)
    assert np.isfinite(ppc.metrics["calibration"].loc["features", "model1"])
