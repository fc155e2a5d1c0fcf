"""A new slide's unknown gene levels (issue 21): `tl.generate(level_sd=)` and `hs.tl.level_spread`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hinge_sc as hs
from hinge_sc._scales import depth_sd_of_values, level_log_sd

from ..test_bad_inputs import make_adata, tiny_trained_model


@pytest.fixture(scope="module")
def model() -> hs.HINGE:
    return tiny_trained_model()


def test_level_log_sd_is_the_spread_of_log_shares_between_sections():
    counts = np.array([[1.0, 9.0], [3.0, 7.0], [20.0, 0.0], [10.0, 10.0]])
    library = counts.sum(axis=1) * 2  # the share is of every gene's counts, not only these
    sections = np.array(["a", "a", "b", "b"])
    share_a = (np.array([4.0, 16.0]) + 0.5) / 40.0
    share_b = (np.array([30.0, 10.0]) + 0.5) / 80.0
    expected = np.std(np.log([share_a, share_b]), axis=0, ddof=1)
    np.testing.assert_allclose(level_log_sd(counts, library, sections), expected)
    np.testing.assert_allclose(level_log_sd(sp.csr_matrix(counts), library, sections), expected)
    assert np.isnan(level_log_sd(counts, library, np.array(["a"] * 4))).all()
    with pytest.raises(ValueError, match="one entry per spot"):
        level_log_sd(counts, library[:3], sections)


def test_level_spread_of_sections():
    adata = make_adata()
    adata.obs["section"] = np.where(np.arange(adata.n_obs) % 2 == 0, "s1", "s2")
    spread = hs.tl.level_spread(adata)
    assert isinstance(spread, pd.Series) and list(spread.index) == list(adata.var_names)
    assert spread.name == "level_sd" and (spread >= 0).all()
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(spread, level_log_sd(adata.X, library, adata.obs["section"].to_numpy()))
    with pytest.raises(ValueError, match="pseudocount"):
        hs.tl.level_spread(adata, pseudocount=0)
    adata.obs["section"] = "one"
    with pytest.raises(ValueError, match="at least two sections"):
        hs.tl.level_spread(adata)
    with pytest.raises(KeyError, match="section_key"):
        hs.tl.level_spread(adata, section_key="slide")


def test_unknown_levels_widen_samples_not_the_mean(model, caplog):
    plain, wide, wide_std, series = make_adata(), make_adata(), make_adata(), make_adata()
    kwargs = {"n_samples": 8, "n_steps": 2, "seed": 0, "show_progress_bar": False, "depth_sd": 0}
    hs.tl.generate(model, plain, save_samples=True, **kwargs)
    hs.tl.generate(model, wide, level_sd=0.5, save_samples=True, **kwargs)
    hs.tl.generate(model, wide_std, level_sd=0.5, **kwargs)  # no samples kept: first-order s.d.
    np.testing.assert_allclose(wide.obsm["hinge"].to_numpy(), plain.obsm["hinge"].to_numpy())
    assert wide.obsm["hinge_std"].to_numpy().mean() > 1.2 * plain.obsm["hinge_std"].to_numpy().mean()
    np.testing.assert_allclose(wide.obsm["hinge_std"].to_numpy(), wide.obsm["hinge_samples"].std(axis=1), atol=1e-5)
    expected = np.sqrt(plain.obsm["hinge_std"].to_numpy() ** 2
                       + depth_sd_of_values(plain.obsm["hinge"].to_numpy(), 0.5) ** 2)  # fmt: skip
    np.testing.assert_allclose(wide_std.obsm["hinge_std"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    record = wide.uns["hinge"]["params"]["library_size"]["level_sd"]
    assert record["median"] == pytest.approx(0.5)
    # a factor per gene: genes differ between samples independently, one factor shared by all spots of a sample
    genes = list(model.panel_genes_)
    by_gene = pd.Series(0.0, index=genes[1:])
    by_gene.iloc[0] = 1.0
    with caplog.at_level(logging.WARNING):
        hs.tl.generate(model, series, level_sd=by_gene, save_samples=True, **kwargs)
    assert "1 of" in caplog.text  # the gene without a value gets the median (0 here)
    changed = ~np.isclose(series.obsm["hinge_samples"], plain.obsm["hinge_samples"], atol=1e-5).all(axis=(0, 1))
    assert changed[genes.index(by_gene.index[0])] and changed.sum() == 1


@pytest.mark.parametrize(("value", "error", "match"), [(-0.1, ValueError, "finite and ≥ 0"),
                                                       (float("nan"), ValueError, "finite and ≥ 0"),
                                                       ("wide", TypeError, "pandas Series"),
                                                       (pd.Series({"NOT_A_GENE": 0.3}), ValueError, "names none")])  # fmt: skip
def test_bad_level_sd(model, value, error, match):
    with pytest.raises(error, match=match):
        hs.tl.generate(model, make_adata(), level_sd=value, n_samples=1, n_steps=2, seed=0, show_progress_bar=False)
