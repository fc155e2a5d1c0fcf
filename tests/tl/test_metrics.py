"""Metric functions against values computed by hand on small arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hinge_sc.tl._metrics import (
    central_interval,
    gene_set_mean,
    interval_coverage,
    morans_i,
    nanmean,
    panel_cp10k,
    relative_variance_distance,
    std_error_spearman,
    top_genes,
)


def test_relative_variance_distance_by_hand():
    y_true = np.array([[0.0, 0.0, 5.0], [2.0, 4.0, 5.0]])  # variances 1, 4 and 0 (left out)
    y_pred = np.array([[0.0, 0.0, 1.0], [2.0 * np.sqrt(2), 4.0, 3.0]])  # variances 2, 4
    assert relative_variance_distance(y_true, y_pred) == pytest.approx(((2 - 1) / 1) ** 2 / 2)
    assert relative_variance_distance(y_true, np.ones_like(y_true)) == pytest.approx(1.0)
    assert np.isnan(relative_variance_distance(np.ones((3, 2)), np.zeros((3, 2))))


@pytest.mark.parametrize(
    ("by", "n", "expected"),
    [
        ("variance", 1, [2]),
        ("variance", 2, [0, 2]),  # genes 0 and 1 tie on variance: the first column wins
        ("mean", 2, [1, 3]),
        ("mean", 10, [0, 1, 2, 3]),  # fewer genes than n: all of them
    ],
)
def test_top_genes_with_ties(by, n, expected):
    y = np.array([[0.0, 10.0, 0.0, 5.0], [2.0, 12.0, 9.0, 5.0]])  # variances 1, 1, 20.25, 0; means 1, 11, 4.5, 5
    np.testing.assert_array_equal(top_genes(y, n, by), expected)


def test_top_genes_bad_choice():
    with pytest.raises(ValueError, match="`by` must be 'variance' or 'mean'"):
        top_genes(np.ones((2, 2)), 1, "median")


def test_panel_cp10k_by_hand():
    values = np.log2(np.array([[1.0, 3.0], [0.0, 0.0]]) + 1)
    expected = np.array([[np.log1p(2500.0), np.log1p(7500.0)], [0.0, 0.0]])  # shares 1/4, 3/4; empty spot gives 0
    np.testing.assert_allclose(panel_cp10k(values, "log2p1"), expected)
    np.testing.assert_allclose(panel_cp10k(np.log1p(np.array([[2.0, 6.0]])), "log1p_cp10k"), expected[:1])
    assert panel_cp10k(np.zeros((2, 3, 4)), "log2p1").shape == (2, 3, 4)  # samples too
    with pytest.raises(ValueError, match="`scale` must be one of"):
        panel_cp10k(values, "log10")


def test_intervals_and_coverage_by_hand():
    samples = np.arange(5.0).reshape(1, 5, 1)  # 0, 1, 2, 3, 4
    lo, hi = central_interval(0.5, samples=samples, method="quantile")
    assert (lo.item(), hi.item()) == (1.0, 3.0)
    lo, hi = central_interval(0.5, samples=samples)  # mean 2, s = √2.5, t_{4, 0.75} = 0.7407, √(1 + 1/5)
    half = 0.74070 * np.sqrt(2.5) * np.sqrt(1.2)
    assert lo.item() == pytest.approx(2 - half, abs=1e-4) and hi.item() == pytest.approx(2 + half, abs=1e-4)
    lo, hi = central_interval(0.9, samples=samples[:, :1])  # one sample: a zero-width interval
    assert lo.item() == hi.item() == 0.0
    with pytest.raises(ValueError, match="`method`"):
        central_interval(0.5, samples=samples, method="hdi")
    lo, hi = central_interval(0.9, mean=np.zeros((1, 1)), std=np.ones((1, 1)))
    assert hi.item() == pytest.approx(1.6448536) and lo.item() == pytest.approx(-1.6448536)
    y = np.array([[0.0, 1.0, 5.0, 3.0]])
    assert interval_coverage(y, np.full((1, 4), 1.0), np.full((1, 4), 3.0)) == 0.5
    with pytest.raises(ValueError, match="`level` must be in"):
        central_interval(1.0, samples=samples)
    with pytest.raises(ValueError, match="Pass `samples`"):
        central_interval(0.5, mean=np.zeros(1))


def test_std_error_spearman():
    y_true = np.zeros((5, 2))
    y_pred = np.array([[0.1, 1.0], [0.2, 1.0], [0.3, 1.0], [0.4, 1.0], [0.5, 1.0]])
    std = np.array([[1.0, 1], [2, 2], [3, 3], [4, 4], [5, 5]])
    # gene 0: s.d. ranks match the error ranks; gene 1: constant error, left out
    assert std_error_spearman(y_true, y_pred, std) == pytest.approx(1.0)
    assert std_error_spearman(y_true, y_pred, std[::-1]) == pytest.approx(-1.0)


def test_nan_helpers_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(nanmean(np.array([np.nan, np.nan])))
        assert nanmean(np.array([1.0, np.nan, 3.0])) == 2.0
        assert gene_set_mean(np.array([0.2, np.nan, 0.4]), [1, 2]) == pytest.approx(0.4)


def test_morans_i_matches_the_formula_on_a_ring():
    # 6 spots on a circle: each spot's 2 nearest neighbours are its ring neighbours, weights 1/2
    angle = 2 * np.pi * np.arange(6) / 6
    xy = np.c_[np.cos(angle), np.sin(angle)]
    values = np.c_[np.arange(1.0, 7.0), np.ones(6), [1.0, -1, 1, -1, 1, -1]]
    # z = -2.5 … 2.5; sum over ring pairs of z_i z_j = 2.5; sum z² = 17.5 -> I = 2.5 / 17.5 = 1/7
    # alternating signs: every neighbour pair has z_i z_j = -1 -> I = -1
    np.testing.assert_allclose(morans_i(values, xy, n_neighs=2), [1 / 7, np.nan, -1.0], atol=1e-6)
    assert np.isnan(morans_i(values[:2], xy[:2], n_neighs=2)).all()  # too few spots
