"""Proper scoring rules and the calibration curve against values computed by hand (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from hinge_sc.tl._uncertainty import calibration_curve, crps_gaussian, crps_samples, energy_score

RNG = np.random.default_rng(13)


def _pairwise_crps(y, x, fair):
    """The O(S²) definition: mean |X − y| − Σ_ij |X_i − X_j| / (2 S(S−1)) (fair) or / (2 S²)."""
    s = x.shape[1]
    pairs = np.abs(x[:, :, None] - x[:, None]).sum(axis=(1, 2))
    return np.abs(x - y[:, None]).mean(axis=1) - pairs / (2 * s * (s - 1) if fair else 2 * s * s)


@pytest.mark.parametrize("fair", [True, False])
def test_crps_samples_matches_the_pairwise_definition(fair):
    y, x = RNG.normal(size=(20, 3)), RNG.normal(size=(20, 9, 3))
    np.testing.assert_allclose(crps_samples(y, x, fair=fair), _pairwise_crps(y, x, fair), atol=1e-12)


@pytest.mark.parametrize("fair", [True, False])
@pytest.mark.parametrize("n_samples", [1, 5])
def test_crps_of_a_degenerate_ensemble_is_the_absolute_error(fair, n_samples):
    y, point = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    x = np.repeat(point[:, None], n_samples, axis=1)
    np.testing.assert_allclose(crps_samples(y, x, fair=fair), [0.5, 0.0, 3.0], atol=1e-12)


def test_crps_of_standard_normal_samples_at_zero():
    # E|X| − ½ E|X − X'| = √(2/π) − ½·2/√π for X, X' ~ N(0, 1)
    x = np.random.default_rng(0).normal(size=(1, 100_000))
    expected = np.sqrt(2 / np.pi) - 1 / np.sqrt(np.pi)
    assert crps_samples(np.zeros(1), x)[0] == pytest.approx(expected, abs=5e-3)


def test_crps_gaussian_matches_a_large_ensemble():
    mean, std, y = np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 2.0]), np.array([0.0, 2.0, 3.0])
    x = mean[:, None] + std[:, None] * np.random.default_rng(1).normal(size=(3, 100_000))
    np.testing.assert_allclose(crps_gaussian(y, mean, std), crps_samples(y, x), rtol=2e-2)
    assert crps_gaussian(0.0, 0.0, 1.0) == pytest.approx(np.sqrt(2 / np.pi) - 1 / np.sqrt(np.pi))


def test_crps_gaussian_with_zero_std_is_the_absolute_error():
    np.testing.assert_allclose(crps_gaussian(np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)), [1.0, 1.0])


@pytest.mark.parametrize("fair", [True, False])
def test_energy_score_in_one_dimension_is_the_crps(fair):
    y, x = RNG.normal(size=(15, 1)), RNG.normal(size=(15, 8, 1))
    np.testing.assert_allclose(energy_score(y, x, fair=fair), crps_samples(y[:, 0], x[:, :, 0], fair=fair))


def test_energy_score_chunks_do_not_change_the_result():
    y, x = RNG.normal(size=(11, 4)), RNG.normal(size=(11, 6, 4))
    np.testing.assert_allclose(energy_score(y, x, chunk_size=1), energy_score(y, x))


def test_energy_score_of_a_degenerate_ensemble_is_the_euclidean_error():
    y, point = np.zeros((1, 2)), np.array([[3.0, 4.0]])
    assert energy_score(y, np.repeat(point[:, None], 4, axis=1))[0] == pytest.approx(5.0)


@pytest.mark.parametrize("shape", [(2000,), (1000, 3)])
def test_calibration_curve_of_calibrated_samples_is_the_diagonal(shape):
    rng = np.random.default_rng(2)
    y = rng.normal(size=shape)
    x = rng.normal(size=(shape[0], 200, *shape[1:]))  # y and the samples come from the same distribution
    curve = calibration_curve(y, x)
    assert list(curve.columns) == ["level", "coverage"]
    np.testing.assert_allclose(curve["level"], np.arange(1, 10) / 10)
    np.testing.assert_allclose(curve["coverage"], curve["level"], atol=0.04)


def test_calibration_curve_of_overconfident_samples_is_below_the_diagonal():
    rng = np.random.default_rng(3)
    curve = calibration_curve(rng.normal(size=(500, 2)), 0.3 * rng.normal(size=(500, 100, 2)), levels=(0.5, 0.9))
    assert (curve["coverage"] < curve["level"] - 0.2).all()


@pytest.mark.parametrize(
    ("func", "args"),
    [
        (crps_samples, (np.zeros(3), np.zeros((4, 5)))),
        (energy_score, (np.zeros((3, 2)), np.zeros((3, 5, 3)))),
        (calibration_curve, (np.zeros((3, 2)), np.zeros((3, 5)))),
    ],
)
def test_shape_mismatch_raises(func, args):
    with pytest.raises(ValueError, match="`samples` must"):
        func(*args)


@pytest.mark.parametrize("n_samples", [4, 8, 32])
def test_few_calibrated_samples_cover_the_nominal_level_with_the_predictive_interval(n_samples):
    """Issue 13: S draws from the true distribution; the t interval covers the nominal level, quantiles do not."""
    rng = np.random.default_rng(n_samples)
    y = rng.normal(size=(4000, 5))
    x = rng.normal(size=(4000, n_samples, 5))
    curve = calibration_curve(y, x, levels=(0.5, 0.9))
    np.testing.assert_allclose(curve["coverage"], [0.5, 0.9], atol=0.015)
    quantile = calibration_curve(y, x, levels=(0.5, 0.9), method="quantile")
    assert (quantile["coverage"].to_numpy() < curve["coverage"].to_numpy() - 0.02).all()
