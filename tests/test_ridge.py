"""The one ridge implementation (``hinge_sc._ridge``) that the model's linear skip and the ridge probes share."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from hinge_sc._ridge import fit_ridge_cv


def _data(n=120, d=6, g=4, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, g))
    return x, x @ w + 0.5 + noise * rng.normal(size=(n, g)), w


def test_noiseless_linear_map_is_recovered_with_the_smallest_penalty():
    x, y, w = _data()
    coef, intercept, alpha = fit_ridge_cv(x, y, alphas=(0.01, 1.0, 100.0))
    assert alpha == 0.01
    np.testing.assert_allclose(coef, w, atol=1e-3)
    np.testing.assert_allclose(intercept, 0.5, atol=1e-3)


def test_pure_noise_gets_a_large_penalty_and_the_fit_equals_sklearn():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 10)), rng.normal(size=(80, 3))
    coef, intercept, alpha = fit_ridge_cv(x, y, alphas=(0.01, 1.0, 1e4))
    assert alpha == 1e4
    ref = Ridge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(coef, ref.coef_.T, atol=1e-8)
    np.testing.assert_allclose(intercept, ref.intercept_, atol=1e-8)


def test_folds_follow_groups_and_need_two():
    x, y, _ = _data(noise=0.5)
    groups = np.repeat(["A", "B", "C"], 40)
    coef, _, _ = fit_ridge_cv(x, y, groups=groups, alphas=(0.1, 10.0))
    assert coef.shape == (6, 4)
    with pytest.raises(ValueError, match="at least 2"):
        fit_ridge_cv(x[:1], y[:1])


def _reference_cv(x, y, groups, alphas):
    """The penalty and fit of an explicit loop over the folds (SVD of each fold's training rows)."""
    from hinge_sc._ridge import _cv_folds, _ridge_basis, _ridge_coef

    folds, _ = _cv_folds(np.arange(len(x)), groups, 5)
    var = y.var(0)
    error = np.zeros(len(alphas))
    for train, test in folds:
        x_mean, y_mean, s, vt, uty = _ridge_basis(x[train], y[train], None)
        for a, alpha in enumerate(alphas):
            pred = (x[test] - x_mean) @ _ridge_coef(s, vt, uty, alpha) + y_mean
            error[a] += np.mean(((pred - y[test]) ** 2).mean(0) / var)
    alpha = alphas[int(np.argmin(error))]
    x_mean, y_mean, s, vt, uty = _ridge_basis(x, y, None)
    coef = _ridge_coef(s, vt, uty, alpha)
    return coef, y_mean - x_mean @ coef, alpha, error


def test_ridge_moments_match_an_explicit_fold_loop_and_do_not_depend_on_chunking():
    from hinge_sc._ridge import RidgeMoments, cv_fold_ids

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12))
    y = x @ rng.normal(size=(12, 5)) * 0.3 + rng.normal(size=(300, 5))
    groups = np.repeat(np.array(list("abcdef")), 50)
    alphas = (0.01, 1.0, 30.0, 1e3, 1e5)
    ref_coef, ref_b, ref_alpha, _ = _reference_cv(x, y, groups, alphas)
    coef, b, alpha = fit_ridge_cv(x, y, groups, alphas=alphas)
    assert alpha == ref_alpha
    np.testing.assert_allclose(coef, ref_coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, ref_b, rtol=1e-6, atol=1e-9)
    # the same spots added a section at a time, in another order
    fold, _ = cv_fold_ids(len(x), groups)
    moments = RidgeMoments(int(fold.max()) + 1)
    for g in "fdbace":
        rows = groups == g
        moments.add(x[rows], y[rows], fold[rows])
    coef2, b2, alpha2 = moments.fit_cv(alphas)
    assert alpha2 == alpha
    np.testing.assert_allclose(coef2, coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b2, b, rtol=1e-8, atol=1e-10)


def test_ridge_moments_without_spots_is_an_error():
    from hinge_sc._ridge import RidgeMoments

    with pytest.raises(ValueError, match="No spots"):
        RidgeMoments(3).fit_cv()
