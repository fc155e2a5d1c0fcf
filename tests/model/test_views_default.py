"""``setup_anndata`` registers ``f"{features_key}_views"`` by default; ``views_key=None`` turns it off (issue 11)."""

from __future__ import annotations

import logging

import hinge_sc as hs

from .conftest import synthetic_adata


def test_views_registered_by_default(caplog):
    adata = synthetic_adata()
    with caplog.at_level(logging.INFO, logger="hinge_sc"):
        hs.HINGE.setup_anndata(adata)
    manager = hs.HINGE._get_most_recent_anndata_manager(adata)
    assert manager.registry["setup_args"]["views_key"] == "X_histology_views"  # the resolved key is recorded
    assert "X_histology_views" in caplog.text

    hs.HINGE.setup_anndata(adata, views_key=None)
    assert hs.HINGE._get_most_recent_anndata_manager(adata).registry["setup_args"]["views_key"] is None

    del adata.obsm["X_histology_views"]
    hs.HINGE.setup_anndata(adata)  # nothing to pick up: no views
    assert hs.HINGE._get_most_recent_anndata_manager(adata).registry["setup_args"]["views_key"] is None
