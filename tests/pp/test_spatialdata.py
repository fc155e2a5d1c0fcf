"""SpatialData input: image elements (multiscale, lazy), spot circles, tables, coordinate transformations."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs

sd = pytest.importorskip("spatialdata")
from spatialdata.models import Image2DModel  # noqa: E402
from spatialdata.transformations import Identity, Scale, Translation, set_transformation  # noqa: E402


@pytest.fixture
def crop(her2st_crop):
    return her2st_crop.copy()


@pytest.fixture
def sdata(her2st_crop):
    return hs.io.to_spatialdata(her2st_crop.copy())


def _replace_image(sdata, arr, transformations, **kwargs):
    sdata.images["C2_image"] = Image2DModel.parse(arr, dims=("y", "x", "c"), transformations=transformations, **kwargs)


def test_zarr_roundtrip_gives_the_anndata_features(crop, sdata, tmp_path):
    ref = hs.pp.histology_features(crop, copy=True, show_progress_bar=False)
    hs.pp.histology_features(sdata, views=1, show_progress_bar=False)
    sdata.write(tmp_path / "crop.zarr")
    back = sd.read_zarr(tmp_path / "crop.zarr")
    hs.pp.histology_features(back, views=1, show_progress_bar=False)  # same image, same settings: skipped
    hs.pp.histology_features(back, key_added="X_zarr", show_progress_bar=False)
    table = back.tables["table"]
    np.testing.assert_allclose(table.obsm["X_zarr_views"], ref.obsm["X_histology_views"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table.obsm["X_histology"], ref.obsm["X_histology"], rtol=1e-6, atol=1e-6)
    params = table.uns["X_zarr"]["params"]
    assert params["microns_per_pixel"]["C2_spots"] == pytest.approx(ref.uns["X_histology"]["params"]
                                                                    ["microns_per_pixel"]["C2"])  # fmt: skip
    assert params["microns_per_pixel_source"]["C2_spots"] == "metadata"


def test_patches_follow_the_transformations(crop, sdata):
    full = crop.uns["spatial"]["C2"]["images"]["hires"]
    ref = hs.pp.extract_patches(sdata, out_size=None, show_progress_bar=False)
    # the same pixels, cropped, placed back by a translation: identical patches
    _replace_image(sdata, full[40:, 30:], {"global": Translation([30, 40], axes=("x", "y"))})
    moved = hs.pp.extract_patches(sdata, out_size=None, show_progress_bar=False)
    np.testing.assert_array_equal(moved[:, 45:-45, 45:-45], ref[:, 45:-45, 45:-45])
    # half resolution, scaled back by 2: same tissue at half the pixels
    _replace_image(sdata, full[::2, ::2], {"global": Scale([2.0, 2.0], axes=("x", "y"))})
    half = hs.pp.extract_patches(sdata, out_size=None, show_progress_bar=False)
    assert half.shape[1] == pytest.approx(ref.shape[1] / 2, abs=1)
    small = hs.pp.extract_patches(sdata, out_size=32, show_progress_bar=False).astype(float)
    _replace_image(sdata, full, {"global": Identity()})
    big = hs.pp.extract_patches(sdata, out_size=32, show_progress_bar=False).astype(float)
    corr = [np.corrcoef(a.mean(-1).ravel(), b.mean(-1).ravel())[0, 1] for a, b in zip(small, big, strict=True)]
    assert np.median(corr) > 0.9


def test_multiscale_image_reads_a_coarser_level(crop, sdata):
    full = crop.uns["spatial"]["C2"]["images"]["hires"]
    _replace_image(sdata, full, {"global": Identity()}, scale_factors=[2, 2])
    assert type(sdata.images["C2_image"]).__name__ == "DataTree"
    from hinge_sc.pp._image import from_array

    slide = from_array(sdata.images["C2_image"])
    assert slide.downsamples == [1.0, 2.0, 4.0] and slide.lazy
    assert slide.pick_level(162, 32) == 2 and slide.pick_level(162, 64) == 1 and slide.pick_level(162, None) == 0
    coarse = hs.pp.extract_patches(sdata, out_size=32, show_progress_bar=False).astype(float)
    fine = hs.pp.extract_patches(crop, out_size=32, show_progress_bar=False).astype(float)
    corr = [np.corrcoef(a.mean(-1).ravel(), b.mean(-1).ravel())[0, 1] for a, b in zip(coarse, fine, strict=True)]
    assert np.median(corr) > 0.9


def test_different_coordinate_systems_raise(sdata):
    set_transformation(sdata.images["C2_image"], {"aligned": Identity()}, set_all=True)
    with pytest.raises(ValueError, match="share no coordinate system"):
        hs.pp.histology_features(sdata, image_key="C2_image", show_progress_bar=False)


def test_spots_outside_the_image_raise(sdata):
    set_transformation(sdata.images["C2_image"], Translation([5000, 0], axes=("x", "y")), to_coordinate_system="global")
    with pytest.raises(ValueError, match="spots of section 'C2_spots' lie outside its image"):
        hs.pp.extract_patches(sdata, show_progress_bar=False)


def test_unknown_mpp_raises(sdata):
    del sdata.tables["table"].uns["spatial"]
    with pytest.raises(ValueError, match=r"Pass `microns_per_pixel=`"):
        hs.pp.histology_features(sdata, show_progress_bar=False)
    hs.pp.histology_features(sdata, microns_per_pixel=0.69, views=1, show_progress_bar=False)
    assert sdata.tables["table"].uns["X_histology"]["params"]["microns_per_pixel_source"]["C2_spots"] == "argument"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"table_key": "nope"}, KeyError, "`table_key='nope'` is not a table"),
    ({"image_key": "nope"}, KeyError, "`image_key='nope'` is not an image"),
    ({"shapes_key": "nope"}, KeyError, r"`shapes_key` \['nope'\] is not annotated"),
])  # fmt: skip
def test_bad_keys(sdata, kwargs, error, match):
    with pytest.raises(error, match=match):
        hs.pp.extract_patches(sdata, show_progress_bar=False, **kwargs)


def test_lazy_image_is_read_crop_by_crop():
    """A 40k × 40k slide: only the chunks under the spots are computed."""
    import dask.array as da

    computed = []

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        computed.append((y0, x0))
        return np.full((y1 - y0, x1 - x0, 3), 200, dtype=np.uint8)

    arr = da.map_blocks(block, chunks=((1024,) * 40, (1024,) * 40, (3,)), dtype=np.uint8)
    sdata = hs.io._spatialdata.spots_to_spatialdata(
        _spots(np.array([[500.0, 500.0], [20_000.0, 30_000.0], [40_900.0, 100.0]]), "big"),
        image=arr, section="big", scalefactors={"spot_diameter_fullres": 110.0, "microns_per_pixel": 0.5},
    )  # fmt: skip
    patches = hs.pp.extract_patches(sdata, out_size=None, show_progress_bar=False)
    assert patches.shape == (3, 224, 224, 3)
    assert (patches[2, :, -40:] == 255).all() and (patches[2, 20:, :100] == 200).all()  # padded past the border
    assert 3 <= len(set(computed)) <= 8  # of 1,600 chunks
    computed.clear()
    # the patches alone (no context field) + the image's fingerprint: 9 windows
    hs.pp.histology_features(sdata, views=1, context=None, standardize=None, show_progress_bar=False)
    assert 3 <= len(set(computed)) <= 17


def _spots(xy, section):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=[f"s{i}" for i in range(len(xy))])
    adata = ad.AnnData(np.zeros((len(xy), 0), dtype=np.float32), obs=obs)
    adata.obsm["spatial"] = xy
    adata.obs["section"] = section
    return adata


def test_from_spatialdata_restores_the_visium_convention(crop, sdata):
    adata = hs.io.from_spatialdata(sdata)
    np.testing.assert_allclose(adata.obsm["spatial"], crop.obsm["spatial"])
    lib = adata.uns["spatial"]["C2_spots"]
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(
        crop.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    )
    assert lib["images"]["hires"].shape == (1400, 1400, 3)
    assert list(adata.obs["section"].unique()) == ["C2_spots"]


def test_to_spatialdata_library_key_is_deprecated(crop):
    with pytest.warns(FutureWarning, match="library_key"):
        sdata = hs.io.to_spatialdata(crop, library_key="section")
    assert list(sdata.shapes) == ["C2_spots"]
