"""``hs.tl.to_adata`` and SpatialData input to every public ``tl`` / ``pl`` function (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs


@pytest.fixture(scope="module")
def genes(her2st_crop):
    totals = np.asarray(her2st_crop.X.sum(axis=0)).ravel()
    return list(her2st_crop.var_names[np.argsort(-totals)[:10]])


@pytest.fixture(scope="module")
def model(her2st_crop, genes):
    adata = her2st_crop[:, genes].copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    hs.HINGE.setup_anndata(adata)
    backbone = hs.Backbone.random(genes, d_model=16, n_layers=1, n_heads=2)
    model = hs.HINGE(adata, backbone, diffusion_steps=4)
    model.train(max_epochs=1, batch_size=16, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    return model


def test_to_adata_from_anndata(model, genes):
    adata = model.adata.copy()
    hs.tl.generate(model, adata, n_samples=3, n_steps=2, seed=0, save_samples=True, show_progress_bar=False)
    before = set(adata.obsm), set(adata.layers)
    gen = hs.tl.to_adata(adata)
    assert (set(adata.obsm), set(adata.layers)) == before  # the source is not changed
    assert gen.shape == (adata.n_obs, len(genes)) and list(gen.var_names) == genes
    np.testing.assert_allclose(gen.X, adata.obsm["hinge"].to_numpy(), rtol=1e-6)
    assert gen.X.min() >= 0 and adata.uns["hinge"]["params"]["clipped_at"] == 0.0
    np.testing.assert_allclose(gen.layers["std"], adata.obsm["hinge_std"].to_numpy(), rtol=1e-6)
    assert gen.obsm["samples"].shape == (adata.n_obs, 3, len(genes))
    np.testing.assert_array_equal(gen.layers["counts"].toarray(), adata[:, genes].X.toarray())
    assert gen.var["measured"].all()
    np.testing.assert_array_equal(gen.obsm["spatial"], adata.obsm["spatial"])
    assert gen.uns["spatial"]["C2"]["images"]["hires"].shape == adata.uns["spatial"]["C2"]["images"]["hires"].shape
    assert gen.uns["spatial"]["C2"]["images"] is not adata.uns["spatial"]["C2"]["images"]
    prov = gen.uns["hinge_sc"]
    assert prov["key"] == "hinge" and prov["scale"] == "log2p1" and prov["params"]["seed"] == 0
    assert list(gen.obs_names) == list(adata.obs_names)
    with pytest.raises(KeyError, match="hs.tl.generate"):
        hs.tl.to_adata(adata, key="nothing")
    with pytest.raises(TypeError, match="`data` must be an AnnData or a SpatialData"):
        hs.tl.to_adata(adata.obsm["hinge"])


def test_spatialdata_everywhere(model, her2st_crop, genes):
    import spatialdata as sd
    from spatialdata.models import TableModel

    sdata = hs.io.to_spatialdata(her2st_crop[:, genes].copy())
    hs.pp.histology_features(sdata, views=1, show_progress_bar=False)
    hs.tl.generate(model, sdata, n_samples=2, n_steps=2, seed=0, show_progress_bar=False)
    table, gen = sdata.tables["table"], sdata.tables["hinge"]
    TableModel().validate(gen)  # a valid table annotating the same spots
    assert gen.uns["spatialdata_attrs"]["region"] == table.uns["spatialdata_attrs"]["region"]
    np.testing.assert_allclose(gen.X, table.obsm["hinge"].to_numpy(), rtol=1e-6)
    shapes_key = table.uns["spatialdata_attrs"]["region"]
    shapes_key = shapes_key if isinstance(shapes_key, str) else shapes_key[0]
    values = sd.get_values(genes[0], sdata=sdata, element_name=shapes_key, table_name="hinge")
    np.testing.assert_allclose(values[genes[0]].to_numpy(), gen[:, genes[0]].X.ravel(), rtol=1e-6)
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401  (registers sdata.pl)

    sdata.pl.render_shapes(shapes_key, color=genes[0], table_name="hinge").pl.show()  # coloured by a generated gene
    plt.close("all")
    # a second run finds the spots' table among the two, and refuses to replace the generated table
    with pytest.raises(KeyError, match="already exists"):
        hs.tl.generate(model, sdata, n_samples=2, n_steps=2, seed=0, show_progress_bar=False, key_added="hinge")
    with pytest.raises(ValueError, match="name of the table"):
        hs.tl.generate(model, sdata, key_added="table", overwrite=True, show_progress_bar=False)
    hs.tl.generate(model, sdata, n_samples=2, n_steps=2, seed=1, overwrite=True, show_progress_bar=False)
    assert sdata.tables["hinge"].uns["hinge_sc"]["params"]["seed"] == 1

    per_gene, per_section = hs.tl.evaluate(sdata)
    assert "pcc_10" in per_section.columns and "hinge_evaluation" in table.uns
    assert hs.tl.to_adata(sdata).shape == (table.n_obs, len(genes))
    fig = hs.pl.spatial_genes(sdata, genes[:2])
    assert fig is not None
    hs.pl.coexpression(sdata, genes[:4])
    hs.pl.gene_scores(sdata, "hinge")
    with pytest.raises(KeyError, match="table_key"):
        hs.tl.evaluate(sdata, table_key="nope")
