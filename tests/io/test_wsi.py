"""Whole-slide images through wsidata (issue 23): a pyramidal TIFF and an Aperio-style (.svs) TIFF written here, from
the real her2st C2 H&E, go through ``read_wsi`` → ``tile_slide`` → ``histology_features`` → ``tl.generate`` →
``wsi.tables``; the LazySlide adapter is driven the way ``zs.tl.feature_prediction`` drives a model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

import hinge_sc as hs

pytest.importorskip("wsidata", reason="the `wsi` extra (wsidata) is part of the `test` extra")
tifffile = pytest.importorskip("tifffile")


def _write_pyramid(path, rgb: np.ndarray, mpp: float, *, aperio: bool) -> None:
    """A tiled, JPEG-compressed pyramid (levels 1, 1/2, 1/4) with the µm/px in the resolution tags; ``aperio``: an
    Aperio ``ImageDescription`` (``MPP = …``), as in an ``.svs`` file."""
    h, w = rgb.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for level in range(3):
            img = rgb[:: 2**level, :: 2**level]
            extra = {}
            if level == 0 and aperio:
                extra["description"] = f"Aperio Image Library v12.0.15\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = {mpp}"
            tif.write(
                np.ascontiguousarray(img), tile=(256, 256), photometric="rgb", compression="jpeg",
                resolution=(1e4 / (mpp * 2**level), 1e4 / (mpp * 2**level)), resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1, metadata=None, **extra,
            )  # fmt: skip


@pytest.fixture(scope="module")
def crop(her2st_crop):
    lib = next(iter(her2st_crop.uns["spatial"].values()))
    return lib["images"]["hires"], float(lib["scalefactors"]["microns_per_pixel"])


@pytest.fixture(scope="module")
def model(her2st_crop):
    totals = np.asarray(her2st_crop.X.sum(axis=0)).ravel()
    adata = her2st_crop[:, her2st_crop.var_names[np.argsort(-totals)[:8]]].copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    hs.HINGE.setup_anndata(adata)
    backbone = hs.Backbone.random(list(adata.var_names), d_model=16, n_layers=1, n_heads=2)
    model = hs.HINGE(adata, backbone, diffusion_steps=4)
    model.train(max_epochs=1, batch_size=16, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    return model


@pytest.mark.parametrize("aperio", [False, True], ids=["pyramidal-tiff", "svs-style"])
def test_slide_to_generated_table(tmp_path, crop, model, aperio):
    rgb, mpp = crop
    path = tmp_path / ("slide.svs" if aperio else "slide.tif")
    _write_pyramid(path, rgb, mpp, aperio=aperio)
    wsi = hs.io.read_wsi(path)
    assert wsi.properties.mpp == pytest.approx(mpp, rel=1e-3)
    assert "wsi" in wsi.images and tuple(wsi.properties.shape) == rgb.shape[:2]

    assert hs.pp.tile_slide(wsi, spot_diameter_um=55, spacing_um=100, section="C2") is wsi  # µm/px from the slide
    spots = wsi.tables["table"]
    assert spots.n_obs > 10 and "C2_spots" in wsi.shapes
    # spots 100 µm apart in µm = px × µm/px
    centres = spots.obsm["spatial"]
    nearest = np.sort(np.linalg.norm(centres[:, None] - centres[None], axis=-1), axis=1)[:, 1]
    assert np.median(nearest) * mpp == pytest.approx(100, rel=0.02)

    hs.pp.histology_features(wsi, views=1, show_progress_bar=False)
    hs.tl.generate(model, wsi, table_key="table", key_added="hinge", n_samples=2, n_steps=2, seed=0)
    gen = wsi.tables["hinge"]
    assert gen.shape == (spots.n_obs, len(model.panel_genes_))
    assert list(np.atleast_1d(gen.uns["spatialdata_attrs"]["region"])) == ["C2_spots"]
    assert gen.uns["hinge_sc"]["scale"] == "log2p1" and np.isfinite(gen.X).all()
    np.testing.assert_allclose(gen.layers["std"], spots.obsm["hinge_std"].to_numpy(), rtol=1e-6)


def test_read_wsi_errors(tmp_path, crop):
    with pytest.raises(FileNotFoundError, match="expected the file of a whole-slide image"):
        hs.io.read_wsi(tmp_path / "missing.svs")
    rgb, mpp = crop
    path = tmp_path / "slide.tif"
    _write_pyramid(path, rgb, mpp, aperio=False)
    with pytest.raises(ValueError, match="microns_per_pixel"):
        hs.io.read_wsi(path, microns_per_pixel=-1)
    assert hs.io.read_wsi(path, microns_per_pixel=0.25).properties.mpp == pytest.approx(0.25)


def _feature_prediction(features, coords, adapter) -> dict[str, np.ndarray]:
    """What ``lazyslide.tl.feature_prediction`` (LazySlide 0.13) does with a model: ``to(device)``; one ``predict``
    call with every tile for a ``whole_slide`` model, with the tile origins when it ``needs_coords``; the result must
    be a non-empty mapping of ``(n_tiles,)`` arrays."""
    adapter.to("cpu")
    assert adapter.whole_slide and adapter.needs_coords
    out = adapter.predict(features, coords)
    assert isinstance(out, Mapping) and out
    for name, value in out.items():
        assert np.asarray(value).shape == (len(features),), name
    return out


def test_lazyslide_adapter(model, her2st_crop):
    features = np.asarray(model.adata.obsm[model.setup_args["features_key"]])
    coords = model.adata.obsm["spatial"]
    adapter = hs.tl.LazySlideAdapter(model, features_model_name="handcrafted", n_samples=3, n_steps=2, seed=5)
    assert adapter.get_transform() is None and adapter.name == "hinge"
    out = _feature_prediction(features, coords, adapter)
    genes = list(model.panel_genes_)
    assert list(out) == [*genes, *(f"{g}_std" for g in genes)]
    # the same tiles generated directly, with the adapter's per-tile names, give the same values
    import anndata as ad
    import pandas as pd

    tiles = ad.AnnData(obs=pd.DataFrame(index=[f"tile_{i}" for i in range(len(features))]))
    tiles.obsm[model.setup_args["features_key"]] = features
    direct = model.generate(tiles, n_samples=3, n_steps=2, seed=5, show_progress_bar=False)
    np.testing.assert_allclose(out[genes[0]], direct.mean[genes[0]].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(out[f"{genes[1]}_std"], direct.std[genes[1]].to_numpy(), rtol=1e-5)
    assert adapter.params_["n_tiles"] == len(features) and adapter.params_["seed"] == 5
    assert adapter.params_["target_scale"] == "log2p1" and adapter.params_["genes"] == genes

    with pytest.raises(ValueError, match="features"):
        adapter.predict(np.zeros((0, features.shape[1])))
    with pytest.raises(ValueError, match="features"):
        adapter.predict(np.zeros((4, features.shape[1] + 1)))
    with pytest.raises(TypeError, match="`model`: expected a trained hinge_sc.HINGE"):
        hs.tl.LazySlideAdapter(object())
