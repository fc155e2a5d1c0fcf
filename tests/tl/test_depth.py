"""Generation at a given sequencing depth (issue 21): `library_size=` on log2(count + 1)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs
from hinge_sc._scales import (
    depth_log_sd,
    depth_sd_of_values,
    shift_depth,
    shift_depth_std,
    thin_to_depth,
    thinning_sd,
)

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
    hs.tl.generate(model, base, depth_sd=0, **kwargs)
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


def test_depth_log_sd_of_section_medians():
    library = np.array([100.0, 300.0, 200.0, 1000.0, 1000.0, 4000.0])
    sections = np.array(["a", "a", "a", "b", "b", "b"])  # medians 200 and 1000
    assert depth_log_sd(library, sections) == pytest.approx(np.std(np.log([200.0, 1000.0]), ddof=1))
    assert depth_log_sd(library, np.array(["a"] * 6)) is None and depth_log_sd(library, None) is None
    with pytest.raises(ValueError, match="one label per spot"):
        depth_log_sd(library, sections[:3])


def test_depth_sd_of_values_matches_log_normal_depths():
    rng = np.random.default_rng(0)
    x = np.array([0.0, 1.0, 4.0, 9.0])
    shifted = shift_depth(np.repeat(x[None], 200_000, axis=0), np.exp(0.05 * rng.standard_normal(200_000)))
    np.testing.assert_allclose(depth_sd_of_values(x, 0.05), shifted.std(axis=0), rtol=0.02, atol=1e-6)


def test_unknown_depth_widens_samples_not_the_mean(model):
    plain, wide, wide_std = make_adata(), make_adata(), make_adata()
    kwargs = {"n_samples": 8, "n_steps": 2, "seed": 0, "show_progress_bar": False}
    hs.tl.generate(model, plain, depth_sd=0, save_samples=True, **kwargs)
    hs.tl.generate(model, wide, depth_sd=0.5, save_samples=True, **kwargs)
    hs.tl.generate(model, wide_std, depth_sd=0.5, **kwargs)  # no samples kept: first-order s.d.
    np.testing.assert_allclose(wide.obsm["hinge"].to_numpy(), plain.obsm["hinge"].to_numpy())
    assert wide.obsm["hinge_std"].to_numpy().mean() > 1.2 * plain.obsm["hinge_std"].to_numpy().mean()
    np.testing.assert_allclose(wide.obsm["hinge_std"].to_numpy(), wide.obsm["hinge_samples"].std(axis=1), atol=1e-5)
    depth_only = np.sqrt(plain.obsm["hinge_std"].to_numpy() ** 2
                         + depth_sd_of_values(plain.obsm["hinge"].to_numpy(), 0.5) ** 2)  # fmt: skip
    assert (wide_std.obsm["hinge_std"].to_numpy() >= depth_only - 1e-5).all()  # plus the thinning of shallow draws
    record = wide.uns["hinge"]["params"]["library_size"]
    assert record["depth_sd"] == 0.5 and "log-normal" in record["source"]
    given = make_adata()
    hs.tl.generate(model, given, library_size=model.train_params_["median_library_size"], depth_sd=0.5,
                   save_samples=True, **kwargs)  # fmt: skip
    np.testing.assert_allclose(given.obsm["hinge_samples"], plain.obsm["hinge_samples"], rtol=1e-4, atol=1e-4)


def test_thin_to_depth_is_binomial_below_and_scaled_above_the_training_depth():
    counts = np.array([0.0, 1.0, 5.0, 40.0])
    x = np.log2(np.broadcast_to(counts, (2, 20_000, 4)) + 1)  # two spots, many draws
    seeds = np.array([11, 12])
    deep = np.exp2(thin_to_depth(x, 2.0, seeds)) - 1
    np.testing.assert_allclose(deep, 2 * np.broadcast_to(counts, deep.shape), rtol=1e-5, atol=1e-4)
    shallow = np.exp2(thin_to_depth(x, np.array([0.25, 0.25]), seeds)) - 1
    np.testing.assert_allclose(np.round(shallow), shallow, atol=1e-3)  # counts again
    np.testing.assert_allclose(shallow.mean(axis=(0, 1)), 0.25 * counts, rtol=0.03, atol=0.01)
    np.testing.assert_allclose(shallow.var(axis=(0, 1)), counts * 0.25 * 0.75, rtol=0.05, atol=0.01)
    alone = thin_to_depth(x[1:], np.array([0.25]), seeds[1:])  # a spot's draws depend on its seed only
    np.testing.assert_array_equal(alone[0], thin_to_depth(x, np.array([0.25, 0.25]), seeds)[1])
    log_sd = np.log2(shallow + 1).std(axis=1)[0]
    np.testing.assert_allclose(thinning_sd(np.log2(counts[3:] + 1), 0.25), log_sd[3:], rtol=0.1)
    assert thinning_sd(np.log2(counts + 1), 1.5).max() == 0.0
    with pytest.raises(ValueError, match="n_spots, S, G"):
        thin_to_depth(x[0], 0.5, seeds)


def test_training_records_the_depth_spread_and_generate_uses_it(model):
    sd = model.train_params_["depth_log_sd"]
    assert sd is None or sd >= 0
    adata = make_adata()
    hs.tl.generate(model, adata, n_samples=2, n_steps=2, seed=0, show_progress_bar=False)
    assert adata.uns["hinge"]["params"]["library_size"]["depth_sd"] == (sd or 0.0)


@pytest.mark.parametrize("value", [-0.1, float("nan"), "wide", True])
def test_bad_depth_sd(model, value):
    with pytest.raises(ValueError, match="`depth_sd` must be a number"):
        hs.tl.generate(model, make_adata(), depth_sd=value, n_samples=1, n_steps=2, seed=0, show_progress_bar=False)


def test_depth_spread_of_sections():
    adata = make_adata()
    adata.obs["section"] = np.where(np.arange(adata.n_obs) % 2 == 0, "s1", "s2")
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    expected = depth_log_sd(library, adata.obs["section"].to_numpy())
    assert hs.tl.depth_spread(adata) == pytest.approx(expected)
    adata.obs["section"] = "one"
    with pytest.raises(ValueError, match="at least two sections"):
        hs.tl.depth_spread(adata)
    with pytest.raises(KeyError, match="section_key"):
        hs.tl.depth_spread(adata, section_key="slide")
