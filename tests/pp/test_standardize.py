"""Features standardised within each section (pp.standardize_features)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs

from ..test_bad_inputs import make_adata


def test_each_section_is_standardised_from_its_own_spots():
    adata = make_adata(40)
    adata.obs["section"] = np.repeat(["A", "B"], 20)
    shift = np.where(adata.obs["section"] == "B", 5.0, 0.0)[:, None]
    adata.obsm["X_histology"] = adata.obsm["X_histology"] * (1 + shift) + shift  # a section-wide colour shift
    views = np.stack([adata.obsm["X_histology"], adata.obsm["X_histology"] + 1.0], axis=1)
    adata.obsm["X_histology_views"] = views
    hs.pp.standardize_features(adata)
    out = adata.obsm["X_histology_std"]
    for section in ("A", "B"):
        rows = (adata.obs["section"] == section).to_numpy()
        np.testing.assert_allclose(out[rows].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(out[rows].std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(adata.obsm["X_histology_std_views"][:, 0], out, atol=1e-5)
    assert adata.uns["X_histology_std"]["params"]["standardized"] == {"source": "X_histology", "per": "section"}
    with pytest.raises(KeyError, match="already exists"):
        hs.pp.standardize_features(adata)
    with pytest.raises(KeyError, match="`section_key='slide'`"):
        hs.pp.standardize_features(adata, section_key="slide", overwrite=True)
