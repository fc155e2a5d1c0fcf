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
