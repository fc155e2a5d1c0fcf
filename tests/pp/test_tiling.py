"""H&E-only slides: tissue detection, virtual spot grids, TIFF slides read lazily (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest

import hinge_sc as hs

H, W = 600, 800


@pytest.fixture(scope="module")
def slide() -> np.ndarray:
    """Bare glass with a stained disc of radius 200 px centred at (x=300, y=300)."""
    rng = np.random.default_rng(0)
    img = np.full((H, W, 3), 242, dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 300) ** 2 + (yy - 300) ** 2 < 200**2
    img[disc] = (rng.normal([200, 120, 180], 15, size=(int(disc.sum()), 3))).clip(0, 255).astype(np.uint8)
    return img


def test_detect_tissue_finds_the_disc(slide):
    mask = hs.pp.detect_tissue(slide)
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 300) ** 2 + (yy - 300) ** 2 < 200**2
    assert (mask == disc).mean() > 0.99


@pytest.mark.parametrize("grid", ["square", "hex"])
def test_grid_covers_only_tissue(slide, grid):
    adata = hs.pp.tile_slide(slide, microns_per_pixel=1.0, spot_diameter_um=30, spacing_um=50, grid=grid)
    xy = adata.obsm["spatial"]
    assert adata.n_vars == 0 and adata.n_obs > 30
    assert (np.hypot(xy[:, 0] - 300, xy[:, 1] - 300) < 205).all()
    area = np.pi * 200**2 / (50 * 50 * (np.sqrt(3) / 2 if grid == "hex" else 1))
    assert adata.n_obs == pytest.approx(area, rel=0.1)
    lib = adata.uns["spatial"]["slide"]
    assert lib["scalefactors"]["spot_diameter_fullres"] == 30 and lib["scalefactors"]["microns_per_pixel"] == 1.0
    assert set(adata.obs["section"]) == {"slide"}
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    assert adata.obsm["X_histology"].shape[0] == adata.n_obs
    assert adata.uns["X_histology"]["params"]["patch_px"]["slide"] == 112


def test_hex_rows_are_offset(slide):
    adata = hs.pp.tile_slide(slide, microns_per_pixel=1.0, spacing_um=50, tissue_mask=False)
    rows = adata.obs["array_row"].to_numpy()
    x0 = adata.obsm["spatial"][rows == 0, 0].min()
    x1 = adata.obsm["spatial"][rows == 1, 0].min()
    assert x1 - x0 == pytest.approx(25) and x0 == pytest.approx(25)
    assert adata.obsm["spatial"][:, 1].max() < H and adata.obsm["spatial"][:, 0].max() < W


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tissue_mask": np.zeros((10, 10), bool)}, "tissue mask is empty.*`tissue_mask=False`"),
    ({"microns_per_pixel": None}, r"µm/px of the slide is unknown.*`microns_per_pixel=`"),
    ({"tissue_mask": np.ones(5, bool)}, "`tissue_mask` must be a 2-D"),
])  # fmt: skip
def test_bad_inputs(slide, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hs.pp.tile_slide(slide, **{"microns_per_pixel": 1.0, **kwargs})


def test_blank_slide_has_no_tissue():
    with pytest.raises(ValueError, match="no tissue was found by the automatic detection"):
        hs.pp.tile_slide(np.full((100, 100, 3), 240, np.uint8), microns_per_pixel=1.0)


def test_tiff_slide_is_read_lazily_with_its_mpp(slide, tmp_path):
    import tifffile

    path = tmp_path / "slide.tif"
    # 2 µm/px as pixels per centimetre; tiled, with a half-resolution level in a SubIFD
    with tifffile.TiffWriter(path) as tif:
        opts = {"tile": (128, 128), "photometric": "rgb", "resolution": (5e3, 5e3), "resolutionunit": "CENTIMETER"}
        tif.write(slide, subifds=1, **opts)
        tif.write(slide[::2, ::2], subfiletype=1, **opts)
    adata = hs.pp.tile_slide(path, spot_diameter_um=60, spacing_um=100)
    lib = adata.uns["spatial"]["slide"]
    assert lib["scalefactors"]["microns_per_pixel"] == pytest.approx(2.0)
    assert lib["metadata"]["source_image_path"] == str(path.resolve())
    from hinge_sc.pp._image import open_image_file

    lazy = open_image_file(path)
    assert lazy.lazy and lazy.downsamples == [1.0, 2.0]
    # the patches themselves (a context field would be read from the coarser level of the lazy slide)
    feats = hs.pp.histology_features(adata, views=1, context=None, standardize=None, copy=True,
                                     show_progress_bar=False).obsm["X_histology"]  # fmt: skip
    in_memory = hs.pp.tile_slide(slide, microns_per_pixel=2.0, spot_diameter_um=60, spacing_um=100)
    hs.pp.histology_features(in_memory, views=1, context=None, standardize=None, show_progress_bar=False)
    np.testing.assert_allclose(feats, in_memory.obsm["X_histology"], rtol=1e-4, atol=1e-4)


def test_lazy_input_gives_spatialdata(slide):
    import dask.array as da

    sdata = hs.pp.tile_slide(da.from_array(slide, chunks=(128, 128, 3)), microns_per_pixel=1.0, spacing_um=50)
    table = sdata.tables["table"]
    assert "slide_spots" in sdata.shapes and table.n_obs > 30
    hs.pp.histology_features(sdata, views=1, show_progress_bar=False)
    assert table.obsm["X_histology"].shape[0] == table.n_obs
    assert table.uns["X_histology"]["params"]["patch_px"]["slide_spots"] == 112


def test_library_id_is_deprecated(slide):
    with pytest.warns(FutureWarning, match="library_id"):
        adata = hs.pp.tile_slide(slide, microns_per_pixel=1.0, spacing_um=100, library_id="s1")
    assert set(adata.obs["section"]) == {"s1"} and list(adata.uns["spatial"]) == ["s1"]
    new = hs.pp.tile_slide(slide, microns_per_pixel=1.0, spacing_um=100, section="s1")
    assert list(new.obs_names) == list(adata.obs_names)
