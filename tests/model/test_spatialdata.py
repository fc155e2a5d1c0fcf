"""HINGE on SpatialData: setup_spatialdata, HINGE(sdata), train, tl.generate into the table (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs


@pytest.fixture(scope="module")
def genes(her2st_crop):
    totals = np.asarray(her2st_crop.X.sum(axis=0)).ravel()
    return list(her2st_crop.var_names[np.argsort(-totals)[:12]])


@pytest.fixture(scope="module")
def trained(her2st_crop, genes):
    sdata = hs.io.to_spatialdata(her2st_crop[:, genes].copy())
    hs.HINGE.setup_spatialdata(sdata, histology_kwargs={"views": 8, "show_progress_bar": False})
    backbone = hs.Backbone.random(genes, d_model=16, n_layers=2, n_heads=2)
    model = hs.HINGE(sdata, backbone, diffusion_steps=5)
    model.train(max_epochs=2, batch_size=16, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    return sdata, model


def test_setup_computes_features_and_views(trained):
    sdata, model = trained
    table = sdata.tables["table"]
    assert table.obsm["X_histology_views"].shape == (table.n_obs, 8, 2 * 80)  # the patch and its context field
    assert model.adata is table
    assert model.setup_args["views_key"] == "X_histology_views"
    assert model.train_params_["n_views"] == 8


def test_generate_writes_into_the_table(trained, genes):
    sdata, model = trained
    hs.tl.generate(model, sdata, n_samples=2, n_steps=3, seed=0, show_progress_bar=False)
    table = sdata.tables["table"]
    assert list(table.obsm["hinge"].columns) == genes and table.obsm["hinge"].shape == (table.n_obs, len(genes))
    assert table.uns["hinge"]["params"]["seed"] == 0


def test_generate_on_an_he_only_slide(trained, her2st_crop, genes, tmp_path):
    import spatialdata as sd

    _, model = trained
    lib = her2st_crop.uns["spatial"]["C2"]
    new = hs.pp.tile_slide(lib["images"]["hires"], microns_per_pixel=lib["scalefactors"]["microns_per_pixel"],
                           spacing_um=150, as_spatialdata=True)  # fmt: skip
    with pytest.raises(KeyError, match="Compute image features first"):
        hs.tl.generate(model, new, show_progress_bar=False)
    hs.pp.histology_features(new, views=1, show_progress_bar=False)
    hs.tl.generate(model, new, n_samples=2, n_steps=3, seed=1, show_progress_bar=False)
    table = new.tables["table"]
    assert table.obsm["hinge"].shape == (table.n_obs, len(genes)) and table.n_vars == 0
    new.write(tmp_path / "new.zarr")
    back = sd.read_zarr(tmp_path / "new.zarr").tables["table"]
    np.testing.assert_allclose(np.asarray(back.obsm["hinge"]), table.obsm["hinge"].to_numpy(), rtol=1e-6)


def test_setup_spatialdata_needs_spatialdata(her2st_crop):
    with pytest.raises(TypeError, match="`sdata` must be a SpatialData object"):
        hs.HINGE.setup_spatialdata(her2st_crop)


def test_ambiguous_tables_ask_for_table_key(her2st_crop):
    from hinge_sc.pp._spatialdata import resolve_table

    sdata = hs.io.to_spatialdata(her2st_crop[:, :5].copy())
    sdata.tables["other"] = sdata.tables["table"].copy()
    with pytest.raises(ValueError, match="Pass `table_key=`"):
        resolve_table(hs.HINGE, sdata)
    assert resolve_table(hs.HINGE, sdata, "other") is sdata.tables["other"]
