"""Visium output folders (written here from a real HER2ST crop) through hs.io.read_visium (issue 3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import hinge_sc as hs

HIRES, LOWRES = 0.25, 0.1


@pytest.fixture(scope="module")
def visium_dir(her2st_crop, tmp_path_factory):
    """Write a Space Ranger ``outs/`` folder: counts (10 genes), positions, scale factors, PNGs, full-res TIFF."""
    import h5py
    from scipy import sparse

    adata = her2st_crop
    path = tmp_path_factory.mktemp("visium")
    (path / "spatial").mkdir()
    crop = adata.uns["spatial"]["C2"]["images"]["hires"]
    mpp = adata.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    barcodes = [f"AAAC{i:04d}-1" for i in range(adata.n_obs)]
    genes = list(adata.var_names[:10])
    counts = sparse.csr_matrix(adata[:, genes].X).astype(np.int32)  # cells × genes = CSC of genes × cells
    with h5py.File(path / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["library_ids"] = np.array([b"crop"])
        f.attrs["chemistry_description"] = b"Spatial 3' v1"
        f.attrs["software_version"] = b"spaceranger-2.1.0"
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = counts.data, counts.indices, counts.indptr
        m["shape"] = np.array([len(genes), adata.n_obs], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S")
        feats["name"] = np.array(genes, dtype="S")
        feats["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        feats["genome"] = np.array([b"GRCh38"] * len(genes))
    xy = adata.obsm["spatial"]
    pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": adata.obs["array_y"].to_numpy(),
                  "array_col": adata.obs["array_x"].to_numpy(), "pxl_row_in_fullres": xy[:, 1].round().astype(int),
                  "pxl_col_in_fullres": xy[:, 0].round().astype(int)}).to_csv(path / "spatial" / "tissue_positions.csv",
                                                                             index=False)  # fmt: skip
    spot = 55.0 / mpp  # a Visium spot is 55 µm: the reader infers the µm/px from it
    scalefactors = {"tissue_hires_scalef": HIRES, "tissue_lowres_scalef": LOWRES, "spot_diameter_fullres": spot,
                    "fiducial_diameter_fullres": spot * 1.6}  # fmt: skip
    (path / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    im = Image.fromarray(crop)
    for name, s in (("hires", HIRES), ("lowres", LOWRES)):
        small = im.resize((round(1400 * s), round(1400 * s)), Image.Resampling.LANCZOS)
        small.save(path / "spatial" / f"tissue_{name}_image.png")
    im.save(path / "fullres.tif")
    return path


@pytest.fixture
def fullres_reference(her2st_crop):
    """Return the crop with coordinates rounded as in tissue_positions.csv."""
    adata = her2st_crop.copy()
    adata.obsm["spatial"] = adata.obsm["spatial"].round()
    return adata


def test_read_visium_records_mpp(visium_dir, her2st_crop):
    adata = hs.io.read_visium(visium_dir)
    lib = adata.uns["spatial"]["crop"]
    mpp = her2st_crop.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    assert lib["scalefactors"]["microns_per_pixel"] == pytest.approx(mpp)
    assert lib["metadata"]["microns_per_pixel_source"] == "visium_spot_diameter"
    assert adata.n_obs == her2st_crop.n_obs and adata.n_vars == 10 and set(adata.obs["section"]) == {"crop"}
    assert lib["images"]["hires"].shape[:2] == (350, 350)


def test_hires_only_covers_the_same_tissue(visium_dir, fullres_reference):
    adata = hs.io.read_visium(visium_dir)
    low = hs.pp.extract_patches(adata, out_size=16, show_progress_bar=False).astype(float)
    full = hs.pp.extract_patches(fullres_reference, out_size=16, show_progress_bar=False).astype(float)
    corr = [np.corrcoef(a.mean(-1).ravel(), b.mean(-1).ravel())[0, 1] for a, b in zip(low, full, strict=True)]
    assert np.median(corr) > 0.9
    # a shifted or unscaled hires image would not match
    wrong = adata.copy()
    wrong.uns["spatial"]["crop"]["scalefactors"]["tissue_hires_scalef"] = LOWRES
    shifted = hs.pp.extract_patches(wrong, out_size=16, show_progress_bar=False).astype(float)
    corr_wrong = [np.corrcoef(a.mean(-1).ravel(), b.mean(-1).ravel())[0, 1] for a, b in zip(shifted, full, strict=True)]
    assert np.median(corr_wrong) < np.median(corr) - 0.3


def test_source_image_gives_full_resolution_patches(visium_dir, fullres_reference):
    adata = hs.io.read_visium(visium_dir, source_image_path=visium_dir / "fullres.tif")
    patches = hs.pp.extract_patches(adata, out_size=None, show_progress_bar=False)
    np.testing.assert_array_equal(patches, hs.pp.extract_patches(fullres_reference, out_size=None,
                                                                 show_progress_bar=False))  # fmt: skip


def test_squidpy_reader_output_infers_visium_mpp(visium_dir, her2st_crop):
    import squidpy as sq

    adata = sq.read.visium(visium_dir)
    hs.pp.histology_features(adata, views=1, section_key=None, show_progress_bar=False)
    params = adata.uns["X_histology"]["params"]
    assert params["microns_per_pixel_source"]["crop"] == "visium_spot_diameter"
    expected = her2st_crop.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    assert params["microns_per_pixel"]["crop"] == pytest.approx(expected)


def test_read_visium_as_spatialdata(visium_dir):
    sdata = hs.io.read_visium(visium_dir, as_spatialdata=True, source_image_path=visium_dir / "fullres.tif")
    assert set(sdata.shapes) == {"crop_spots"} and set(sdata.images) == {"crop_image"}
    assert sdata.images["crop_image"].shape[1:] == (1400, 1400)  # the full-resolution TIFF
    hs.pp.histology_features(sdata, views=1, show_progress_bar=False)
    assert sdata.tables["table"].obsm["X_histology"].shape == (sdata.tables["table"].n_obs, 2 * 80)  # + field
