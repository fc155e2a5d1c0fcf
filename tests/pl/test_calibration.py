"""Smoke tests of the calibration plot on a small synthetic AnnData (issue 13)."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from scipy import sparse

import hinge_sc as hs


@pytest.fixture
def adata():
    """Two sections, 5 genes; 'good' has samples as wide as its error, 'narrow' too narrow, 'nosamples' none."""
    rng = np.random.default_rng(0)
    n, genes = 60, [f"G{i}" for i in range(5)]
    counts = rng.poisson(8.0, size=(n, 5)).astype(np.float32)
    adata = ad.AnnData(sparse.csr_matrix(counts), var=pd.DataFrame(index=genes))
    adata.obs_names = [f"s{i}" for i in range(n)]
    adata.obs["section"] = pd.Categorical(np.repeat(["A", "B"], n // 2))
    truth = np.log2(counts + 1)
    for key, spread in (("good", 0.4), ("narrow", 0.05), ("nosamples", 0.4)):
        mean = truth + rng.normal(scale=0.4, size=truth.shape)
        adata.obsm[key] = pd.DataFrame(mean, index=adata.obs_names, columns=genes)
        if key != "nosamples":
            adata.obsm[f"{key}_samples"] = mean[:, None] + rng.normal(scale=spread, size=(n, 32, 5))
    return adata


def test_calibration_one_key_draws_curve_and_diagonal(adata, tmp_path):
    ax = hs.pl.calibration(adata, key="good", section="B", save=tmp_path / "cal.png")
    assert isinstance(ax, Axes) and (tmp_path / "cal.png").stat().st_size > 0
    assert [line.get_label() for line in ax.get_lines()] == ["ideal", "good (log2p1)"]
    np.testing.assert_allclose(ax.get_lines()[1].get_xdata(), np.arange(1, 10) / 10)
    assert "B" in ax.get_title()
    plt.close("all")


def test_calibration_several_keys_into_given_axes(adata):
    _, given = plt.subplots()
    ax = hs.pl.calibration(adata, keys=["good", "narrow"], section_key=None, levels=(0.5, 0.9), ax=given)
    assert ax is given and len(ax.get_lines()) == 3
    good, narrow = (np.asarray(line.get_ydata()) for line in ax.get_lines()[1:])
    assert (narrow < good).all()  # too-narrow intervals cover less
    plt.close("all")


def test_calibration_show_returns_axes(adata):
    assert isinstance(hs.pl.calibration(adata, key="good", scale="log1p_cp10k", show=True), Axes)
    plt.close("all")


def test_calibration_errors(adata):
    with pytest.raises(KeyError, match=r"save_samples=True"):
        hs.pl.calibration(adata, key="nosamples")
    with pytest.raises(KeyError, match="Run `hs.tl.generate` first"):
        hs.pl.calibration(adata, key="absent")
    with pytest.raises(ValueError, match="not both"):
        hs.pl.calibration(adata, key="good", keys=["narrow"])
    with pytest.raises(ValueError, match="`levels` must be"):
        hs.pl.calibration(adata, key="good", levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="`section='Z'`"):
        hs.pl.calibration(adata, key="good", section="Z")
    plt.close("all")
