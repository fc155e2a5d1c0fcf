"""``pp.select_genes(include=...)`` forces genes into the panel (issue 11)."""

from __future__ import annotations

import pytest

import hinge_sc as hs


def test_include_forces_erbb2(her2st_c):
    adata = her2st_c.copy()
    plain = hs.pp.select_genes(adata, n_genes=30)
    assert "ERBB2" not in plain  # HMHVG over the sections' HVGs leaves it out, so `include` must force it
    panel = hs.pp.select_genes(adata, n_genes=30, include=["ERBB2"], overwrite=True)
    assert "ERBB2" in panel and len(panel) == len(set(panel)) == 30
    assert set(plain[:20]) <= set(panel)  # the method fills the rest with its own top genes
    assert bool(adata.var.loc["ERBB2", "hinge_panel"])


def test_include_errors_name_the_genes(her2st_c):
    adata = her2st_c.copy()
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        hs.pp.select_genes(adata, n_genes=10, section_key=None, include=["ERBB2", "NOT_A_GENE"])
    with pytest.raises(KeyError, match=r"backbone vocabulary.*ERBB2"):
        hs.pp.select_genes(adata, n_genes=10, section_key=None, include=["ERBB2"], vocabulary=["GNAS", "ACTB"])
    with pytest.raises(ValueError, match="`include` has 2 genes but `n_genes=1`"):
        hs.pp.select_genes(adata, n_genes=1, section_key=None, include=["ERBB2", "GNAS"])
