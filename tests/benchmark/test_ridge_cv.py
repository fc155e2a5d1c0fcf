"""RidgeProbe with a cross-validated alpha (grouped by section or spot), PCA, and ProbabilisticRidge (issue 13)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs
from hinge_sc.benchmark import ProbabilisticRidge, RidgeProbe, _ridge

N_FEATURES, N_GENES = 6, 8


def _adata(x: np.ndarray, y: np.ndarray, sections: np.ndarray | None = None, views: int = 0) -> ad.AnnData:
    """Spots whose log2(count + 1) is exactly ``y`` (non-integer counts: fit with ``allow_non_integer``)."""
    adata = ad.AnnData((2.0 ** np.asarray(y, dtype=np.float64) - 1).astype(np.float32))
    adata.var_names = [f"G{i}" for i in range(y.shape[1])]
    adata.obs_names = [f"spot{i}" for i in range(len(y))]
    adata.obs["section"] = "S0" if sections is None else sections
    adata.obsm["X_histology"] = x.astype(np.float32)
    if views:
        jitter = 0.01 * np.random.default_rng(1).normal(size=(len(x), views, x.shape[1]))
        adata.obsm["X_histology_views"] = (x[:, None] + jitter).astype(np.float32)
    return adata


def _linear(n: int, noise: np.ndarray | float, seed: int = 0, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    w = np.random.default_rng(99).normal(size=(N_FEATURES, N_GENES)) * 0.3
    y = 6 + signal * x @ w + np.asarray(noise) * rng.normal(size=(n, N_GENES))
    return x, np.clip(y, 0, None)


def test_cv_picks_a_large_alpha_on_pure_noise():
    x, y = _linear(200, noise=1.0, signal=0.0)
    ridge = RidgeProbe("cv").fit(_adata(x, y), allow_non_integer=True)
    assert ridge.alpha_ >= 1e3
    table = ridge.cv_results_
    assert list(table.columns) == ["alpha", "rmse", "rmse_std", "pearson", "pearson_std"] and len(table) == 15
    assert table["rmse"].iloc[-1] < table["rmse"].iloc[0]


def test_cv_picks_a_small_alpha_on_a_noiseless_linear_target():
    x, y = _linear(200, noise=0.0)
    ridge = RidgeProbe("cv").fit(_adata(x, y), allow_non_integer=True)
    assert ridge.alpha_ == pytest.approx(0.01)
    assert ridge.cv_results_["rmse"].min() < 1e-6


@pytest.mark.parametrize("n_components", [None, 3])
def test_closed_form_matches_sklearn(n_components):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    x, y = _linear(120, noise=0.5)
    adata = _adata(x, y)
    ridge = RidgeProbe(3.0, n_components=n_components).fit(adata, allow_non_integer=True)
    z = ridge._standardise(x)
    steps = [Ridge(alpha=3.0)] if n_components is None else [PCA(n_components), Ridge(alpha=3.0)]
    expected = make_pipeline(*steps).fit(z, np.log2(adata.X + 1.0)).predict(z)
    np.testing.assert_allclose(ridge.generate(adata).mean.to_numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("shape", [(50, 8), (8, 50)], ids=["tall", "wide"])
def test_ridge_basis_matches_sklearn_for_tall_and_wide_features(shape):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=shape), rng.normal(size=(shape[0], 3))
    x_mean, y_mean, s, vt, uty = _ridge._ridge_basis(x, y, None)
    coef = _ridge._ridge_coef(s, vt, uty, 0.7)
    expected = Ridge(alpha=0.7).fit(x, y)
    np.testing.assert_allclose(coef, expected.coef_.T, atol=1e-8)
    np.testing.assert_allclose(y_mean - x_mean @ coef, expected.intercept_, atol=1e-8)


def test_folds_hold_out_whole_sections(monkeypatch):
    calls, original = [], _ridge._cv_folds

    def spy(spots, groups, n_splits):
        folds, by = original(spots, groups, n_splits)
        calls.append((folds, by, groups))
        return folds, by

    monkeypatch.setattr(_ridge, "_cv_folds", spy)
    x, y = _linear(90, noise=0.5)
    sections = np.repeat(["A", "B", "C"], 30)
    ridge = RidgeProbe("cv", cv=5).fit(_adata(x, y, sections, views=4), views_key="X_histology_views",
                                       section_key="section", allow_non_integer=True)  # fmt: skip
    ((folds, by, groups),) = calls
    assert by == "section" and len(folds) == 3 and ridge.cv_n_folds_ == 3  # min(cv, n_sections): leave one out
    held_out = sorted(set(groups[test]).pop() for _, test in folds if len(set(groups[test])) == 1)
    assert held_out == ["A", "B", "C"] and all(set(groups[train]).isdisjoint(groups[test]) for train, test in folds)
    params = ridge.fit_params_
    assert params["section_key"] == "section" and params["cv_by"] == "section" and params["cv_n_folds"] == 3


def test_without_sections_folds_hold_out_whole_spots():
    x, y = _linear(60, noise=0.5)
    spots = np.repeat(np.arange(60), 4)  # what `fit` passes with 4 views
    folds, by = _ridge._cv_folds(spots, None, 5)
    assert by == "spot" and len(folds) == 5
    assert all(set(spots[train]).isdisjoint(spots[test]) for train, test in folds)


def test_grouped_cv_does_not_reward_memorising_sections():
    """Section offsets in features and targets, no signal within a section: spot-level CV leaks, section CV not."""
    rng = np.random.default_rng(3)
    n_sections, per = 6, 40
    sections = np.repeat([f"S{i}" for i in range(n_sections)], per)
    feature_offset = 3 * rng.normal(size=(n_sections, N_FEATURES))
    target_offset = rng.normal(size=(n_sections, N_GENES))
    code = np.repeat(np.arange(n_sections), per)
    x = feature_offset[code] + rng.normal(size=(len(code), N_FEATURES))
    y = 6 + target_offset[code] + 0.3 * rng.normal(size=(len(code), N_GENES))
    adata = _adata(x, y, sections)
    by_spot = RidgeProbe("cv").fit(adata, allow_non_integer=True)
    by_section = RidgeProbe("cv").fit(adata, section_key="section", allow_non_integer=True)
    assert by_spot.cv_by_ == "spot" and by_section.cv_by_ == "section"
    assert by_spot.alpha_ <= 10 and by_section.alpha_ >= 100 * by_spot.alpha_
    # spot-level CV promises far more than section-level CV delivers
    assert by_spot.cv_results_["rmse"].min() < 0.5 * by_section.cv_results_["rmse"].min()


def test_pca_option_runs_and_is_recorded():
    x, y = _linear(100, noise=0.3)
    adata = _adata(x, y)
    ridge = RidgeProbe("cv", n_components=3).fit(adata, allow_non_integer=True)
    test = adata.copy()
    ridge.predict(test)
    params = test.uns["ridge"]["params"]
    assert params["n_components"] == 3 and params["alpha"] == "cv" and params["alpha_selected"] == ridge.alpha_
    assert params["cv_results"]["alpha"] == pytest.approx(list(ridge.cv_results_["alpha"]))
    with pytest.raises(ValueError, match="`n_components=7` exceeds the 6 image features"):
        RidgeProbe("cv", n_components=7).fit(adata, allow_non_integer=True)


SIGMA = np.linspace(0.2, 1.0, N_GENES)


@pytest.fixture(scope="module")
def gaussian_data():
    x, y = _linear(800, noise=SIGMA, seed=5)
    assert (y > 0).all()  # no clipping: the noise is exactly Gaussian
    adata = _adata(x, y)
    return adata[:400].copy(), adata[400:].copy()


def test_probabilistic_ridge_estimates_the_noise(gaussian_data):
    train, _ = gaussian_data
    model = ProbabilisticRidge().fit(train, allow_non_integer=True)
    np.testing.assert_allclose(model.residual_std_, SIGMA, rtol=0.15)


def test_probabilistic_ridge_intervals_cover(gaussian_data):
    train, test = gaussian_data
    test = test.copy()
    model = ProbabilisticRidge(n_samples=200).fit(train, allow_non_integer=True)
    model.predict(test, save_samples=True)
    samples = test.obsm["ridge_prob_samples"]
    assert samples.shape == (test.n_obs, 200, N_GENES)
    truth = np.log2(test.X + 1.0)
    lo, hi = np.quantile(samples, [0.05, 0.95], axis=1)
    assert 0.85 <= np.mean((truth >= lo) & (truth <= hi)) <= 0.95
    _, per_section = hs.tl.evaluate(test, key="ridge_prob", spatial_key=None, allow_non_integer=True)
    assert 0.85 <= per_section.loc["S0", "coverage_90"] <= 0.95


def test_probabilistic_ridge_writes_std_and_samples(gaussian_data):
    train, test = gaussian_data
    test = test.copy()
    model = ProbabilisticRidge(seed=4).fit(train, allow_non_integer=True)
    model.predict(test, save_samples=True)
    std = test.obsm["ridge_prob_std"]
    assert isinstance(std, pd.DataFrame) and np.allclose(std.to_numpy(), model.residual_std_)
    assert test.obsm["ridge_prob_samples"].shape == (test.n_obs, 32, N_GENES)
    params = test.uns["ridge_prob"]["params"]
    assert params["method"] == "ridge_prob" and params["seed"] == 4
    assert params["n_draws"] == 32 and params["n_samples"] == len(train)  # draws vs training samples
    assert params["residual_std"] == pytest.approx(model.residual_std_.tolist())


def test_probabilistic_ridge_is_seeded(gaussian_data):
    train, test = gaussian_data
    a = ProbabilisticRidge(seed=1).fit(train, allow_non_integer=True)
    b = ProbabilisticRidge(seed=2).fit(train, allow_non_integer=True)
    first, again = a.generate(test), a.generate(test)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert first.seed == 1 and not np.allclose(first.samples, b.generate(test).samples)
    pd.testing.assert_frame_equal(first.mean, b.generate(test).mean)


def test_probabilistic_ridge_with_a_fixed_alpha_still_uses_out_of_fold_residuals(gaussian_data):
    train, _ = gaussian_data
    model = ProbabilisticRidge(1.0).fit(train, allow_non_integer=True)
    assert model.alpha_ == 1.0 and len(model.cv_results_) == 1
    np.testing.assert_allclose(model.residual_std_, SIGMA, rtol=0.15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": "auto"}, "`alpha` must be a float ≥ 0 or 'cv'"),
        ({"alpha": "cv", "alphas": [1.0, -1.0]}, "`alphas` must be a non-empty sequence of positive floats"),
        ({"alpha": "cv", "cv": 1}, "`cv` must be an integer ≥ 2"),
        ({"alpha": "cv", "scoring": "r2"}, "`scoring` must be one of"),
        ({"alpha": "cv", "n_components": 0}, "`n_components` must be a positive integer"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RidgeProbe(**kwargs)


def test_bad_section_key(gaussian_data):
    train, _ = gaussian_data
    with pytest.raises(KeyError, match="`section_key='sample'` is not a column of `adata.obs`"):
        RidgeProbe("cv").fit(train, section_key="sample", allow_non_integer=True)
    with pytest.warns(UserWarning, match="names a single training section"):
        RidgeProbe("cv").fit(train, section_key="section", allow_non_integer=True)


def test_real_sections(her2st_c):
    """Smoke test on real her2st spots: C2 trains (folds by spot), C3 is held out."""
    adata = her2st_c.copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    counts = adata.X.toarray()
    genes = list(adata.var_names[np.argsort(-counts.mean(0))[:50]])
    train, test = adata[adata.obs["section"] == "C2"].copy(), adata[adata.obs["section"] == "C3"].copy()
    model = ProbabilisticRidge().fit(train, genes=genes)
    model.predict(test)
    _, per_section = hs.tl.evaluate(test, key="ridge_prob")
    row = per_section.loc["C3"]
    assert model.cv_by_ == "spot" and model.alpha_ in model.alphas
    assert np.isfinite(row["pcc_mean"]) and 0.5 <= row["coverage_90"] <= 1.0
    print(f"alpha={model.alpha_:.3g} pcc_mean={row['pcc_mean']:.3f} coverage_50={row['coverage_50']:.3f} "
          f"coverage_90={row['coverage_90']:.3f}")  # fmt: skip
