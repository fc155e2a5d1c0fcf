"""Generation at a given sequencing depth (issue 21): `library_size=` on log2(count + 1)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs
from hinge_sc._scales import shift_depth, shift_depth_std

from ..test_bad_inputs import make_adata, tiny_trained_model


def test_shift_depth_scales_the_counts():
    x = np.log2(np.array([[0.0, 1.0, 7.0, 1023.0]]) + 1)
    np.testing.assert_allclose(shift_depth(x, 1.0), x)
    np.testing.assert_allclose(np.exp2(shift_depth(x, 0.5)) - 1, [[0.0, 0.5, 3.5, 511.5]])
    per_spot = shift_depth(np.repeat(x, 2, axis=0), np.array([1.0, 2.0]))
    np.testing.assert_allclose(np.exp2(per_spot[1]) - 1, [0.0, 2.0, 14.0, 2046.0])
    samples = np.stack([x, x + 0.1], axis=1)  # (n, S, G)
    assert shift_depth(samples, np.array([0.5])).shape == samples.shape


def test_shift_depth_std_matches_a_small_perturbation():
    x, eps = np.array([[3.0, 6.0]]), 1e-4
    slope = (shift_depth(x + eps, 0.4) - shift_depth(x - eps, 0.4)) / (2 * eps)
    np.testing.assert_allclose(shift_depth_std(x, np.ones_like(x), 0.4), slope, rtol=1e-5)


@pytest.fixture(scope="module")
def model() -> hs.HINGE:
    return tiny_trained_model()


def test_generate_at_a_given_depth(model):
    base, deep, observed = make_adata(), make_adata(), make_adata()
    kwargs = {"n_samples": 2, "n_steps": 2, "seed": 0, "show_progress_bar": False, "save_samples": True}
    hs.tl.generate(model, base, **kwargs)
    train_depth = model.train_params_["median_library_size"]
    hs.tl.generate(model, deep, library_size=2 * train_depth, **kwargs)
    counts = np.exp2(base.obsm["hinge"].to_numpy()) - 1
    np.testing.assert_allclose(np.exp2(deep.obsm["hinge"].to_numpy()) - 1, 2 * counts, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deep.obsm["hinge_std"].to_numpy(), deep.obsm["hinge_samples"].std(axis=1), atol=1e-5)
    assert deep.uns["hinge"]["params"]["library_size"]["source"] == "given"
    assert base.uns["hinge"]["params"]["library_size"]["source"] == "training median"
    hs.tl.generate(model, observed, library_size="observed", **kwargs)
    ratio = np.asarray(observed.X.sum(axis=1)).ravel() / train_depth
    np.testing.assert_allclose(np.exp2(observed.obsm["hinge"].to_numpy()) - 1, counts * ratio[:, None], rtol=1e-4,
                               atol=1e-4)  # fmt: skip


@pytest.mark.parametrize(("value", "match"), [(-1.0, "finite and > 0"), ("median", "'observed'"),
                                              (np.ones(3), "one value per spot")])  # fmt: skip
def test_bad_library_size(model, value, match):
    with pytest.raises(ValueError, match=match):
        hs.tl.generate(model, make_adata(), library_size=value, n_samples=1, n_steps=2, seed=0,
                       show_progress_bar=False)  # fmt: skip
