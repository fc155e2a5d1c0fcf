"""Issue 11, "How it will be checked", in small: train on one her2st section, generate another from its H&E alone,
analyse the generated expression with scanpy/squidpy unchanged; the same through SpatialData."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs


@pytest.fixture(scope="module")
def sections(her2st_c):
    """40 spots of C2 (training) and 40 of C3 (to generate), with 8-view features."""
    c2 = her2st_c[her2st_c.obs["section"] == "C2"][:40].copy()
    c3 = her2st_c[her2st_c.obs["section"] == "C3"][:40].copy()
    for adata in (c2, c3):
        hs.pp.histology_features(adata, views=8, show_progress_bar=False)
    return c2, c3


@pytest.fixture(scope="module")
def model(sections):
    c2, _ = sections
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        panel = hs.pp.select_genes(c2, n_genes=12, method="highly_expressed", section_key=None, include=["ERBB2"])
        backbone = hs.Backbone.random(panel, d_model=16, n_layers=1, n_heads=2)
    hs.HINGE.setup_anndata(c2, section_key="section")
    model = hs.HINGE(c2, backbone, genes=panel, diffusion_steps=4)
    model.train(max_epochs=2, lr=1e-2, batch_size=64, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    return model


def test_views_were_registered(model):
    assert model.registry_["setup_args"]["views_key"] == "X_histology_views"
    assert model.train_params_["n_views"] == 8


def test_he_only_section_to_scanpy_and_squidpy(model, sections):
    import scanpy as sc
    import squidpy as sq

    _, c3 = sections
    he = c3[:, []].copy()  # the H&E alone: no measured genes, only image features and coordinates
    assert he.n_vars == 0
    mean = model.get_expression(he, n_samples=2, seed=0)
    assert isinstance(mean, pd.DataFrame) and mean.shape == (he.n_obs, len(model.panel_genes_))
    hs.tl.generate(model, he, n_samples=2, seed=0, show_progress_bar=False)
    gen = hs.tl.to_adata(he)
    assert "counts" not in gen.layers and not gen.var["measured"].any()
    assert list(gen.uns["spatial"]) == ["C3"]
    sc.pp.pca(gen, n_comps=3)
    sq.gr.spatial_neighbors(gen)
    sq.gr.spatial_autocorr(gen, mode="moran", n_perms=None)
    assert "X_pca" in gen.obsm and "moranI" in gen.uns and "ERBB2" in gen.uns["moranI"].index
    sq.pl.spatial_scatter(gen, color="ERBB2")
    plt.close("all")


def test_same_through_spatialdata(model, sections):
    _, c3 = sections
    sdata = hs.io.to_spatialdata(c3[:, model.panel_genes_].copy())
    hs.tl.generate(model, sdata, n_samples=2, seed=0, show_progress_bar=False)
    _, per_section = hs.tl.evaluate(sdata, section_key=None)
    assert np.isfinite(per_section.loc["all", "pcc_10"])
    hs.pl.spatial_genes(sdata, ["ERBB2"], section_key=None)
    plt.close("all")
    gen = hs.tl.to_adata(sdata)
    assert gen.shape == (c3.n_obs, len(model.panel_genes_)) and "counts" in gen.layers
    assert sdata.tables["hinge"].n_vars == len(model.panel_genes_)
