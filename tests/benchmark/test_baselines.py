from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hinge_sc as hs
from hinge_sc.benchmark import KNNRetrieval, MLPRegressor, RidgeProbe, TrainingMean

N_GENES, N_FEATURES = 12, 6


def _adata(seed: int = 0, n: int = 80) -> ad.AnnData:
    """Make counts that depend linearly (in log space) on the features."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, N_FEATURES)).astype(np.float32) * np.arange(1, N_FEATURES + 1)  # unequal scales
    weights = np.random.default_rng(123).normal(size=(N_FEATURES, N_GENES)) / np.arange(1, N_FEATURES + 1)[:, None]
    counts = rng.poisson(np.exp(1.5 + 0.5 * feats @ weights)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"G{i}" for i in range(N_GENES)]
    adata.obs_names = [f"s{seed}_{i}" for i in range(n)]
    adata.obs["section"] = f"S{seed}"
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    adata.obsm["X_histology"] = feats
    views = np.repeat(feats[:, None], 3, axis=1) + 0.01 * rng.normal(size=(n, 3, N_FEATURES)).astype(np.float32)
    views[:, 0] = feats
    adata.obsm["X_histology_views"] = views
    return adata


@pytest.fixture(scope="module")
def data():
    return _adata(0), _adata(1)


@pytest.mark.parametrize(
    ("estimator", "has_std"),
    [(RidgeProbe(1.0), False), (KNNRetrieval(5), True), (MLPRegressor(max_epochs=40), False), (TrainingMean(), False)],
    ids=["ridge", "knn", "mlp", "mean"],
)
def test_fit_predict_writes_like_generate(data, estimator, has_std):
    train, test = data
    test = test.copy()
    genes = list(train.var_names[:10])
    estimator.fit(train, genes=genes, views_key="X_histology_views")
    estimator.predict(test, save_samples=True)
    key = estimator.name
    assert isinstance(test.obsm[key], pd.DataFrame) and list(test.obsm[key].columns) == genes
    assert list(test.obsm[key].index) == list(test.obs_names)
    assert (f"{key}_std" in test.obsm) == has_std
    params = test.uns[key]["params"]
    assert params["method"] == key and params["target_scale"] == "log2p1" and params["genes"] == genes
    _, per_section = hs.tl.evaluate(test, key=key)
    if key != "mean":  # the signal is linear in the features: every learner finds it
        assert per_section.loc["S1", "pcc_mean"] > 0.5
    else:
        assert np.isnan(per_section.loc["S1", "pcc_mean"]) and per_section.loc["S1", "rvd"] == pytest.approx(1.0)


def test_knn_samples_are_the_neighbours(data):
    train, test = data
    genes = list(train.var_names)
    knn = KNNRetrieval(4).fit(train, genes=genes)
    out = knn.generate(test)
    assert out.samples.shape == (test.n_obs, 4, N_GENES)
    np.testing.assert_allclose(out.mean.to_numpy(), out.samples.mean(1))
    # a training spot retrieves itself first
    own = knn.generate(train)
    np.testing.assert_allclose(own.samples[:, 0], np.log2(train.X.toarray() + 1))


def test_mlp_is_seeded(data):
    train, test = data
    a = MLPRegressor(max_epochs=3, seed=1).fit(train).generate(test).mean
    b = MLPRegressor(max_epochs=3, seed=1).fit(train).generate(test).mean
    c = MLPRegressor(max_epochs=3, seed=2).fit(train).generate(test).mean
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_ridge_standardises_with_training_statistics(data):
    train, _ = data
    ridge = RidgeProbe(0.0).fit(train)
    np.testing.assert_allclose(ridge.feature_mean_, train.obsm["X_histology"].mean(0), rtol=1e-5, atol=1e-6)
    shifted = train.copy()
    shifted.obsm["X_histology"] = shifted.obsm["X_histology"] * 10 + 3  # an affine change of the features
    again = RidgeProbe(0.0).fit(shifted).generate(shifted).mean
    pd.testing.assert_frame_equal(again, ridge.generate(train).mean, atol=1e-4)


def test_cp10k_targets_and_spots_without_counts(data):
    train, test = data
    train = train.copy()
    counts = train.X.toarray()
    counts[0] = 0
    train.X = sp.csr_matrix(counts)
    with pytest.warns(UserWarning, match="1 of 80 spots have no counts"):
        ridge = RidgeProbe().fit(train, target_scale="log1p_cp10k")
    assert ridge.fit_params_["n_spots"] == 79
    test = test.copy()
    ridge.predict(test)
    assert test.uns["ridge"]["params"]["target_scale"] == "log1p_cp10k"
    _, per_section = hs.tl.evaluate(test, key="ridge")
    assert hs.tl.evaluate(test, key="ridge", key_added="e2")[1].loc["S1", "mse"] == per_section.loc["S1", "mse"]


def test_errors(data):
    train, test = data
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeProbe().predict(test)
    with pytest.raises(ValueError, match="`alpha` must be ≥ 0"):
        RidgeProbe(-1)
    with pytest.raises(ValueError, match="`n_neighbors` must be a positive integer"):
        KNNRetrieval(0)
    with pytest.raises(ValueError, match="`target_scale` must be one of"):
        RidgeProbe().fit(train, target_scale="raw")
    with pytest.raises(KeyError, match="`genes` has genes missing"):
        RidgeProbe().fit(train, genes=["NOPE"])
    ridge = RidgeProbe().fit(train)
    test = test.copy()
    ridge.predict(test)
    with pytest.raises(KeyError, match="already exists"):
        ridge.predict(test)
    test.obsm["X_histology"] = test.obsm["X_histology"][:, :3]
    with pytest.raises(ValueError, match="has 3 features; the baseline was fitted on 6"):
        ridge.predict(test, overwrite=True)
