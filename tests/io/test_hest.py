"""HEST-1k folders written here in HEST's formats, and a real HER2ST section laid out as HEST does, read by
``hs.io.read_hest`` / ``hs.io.read_hest_patches`` (issue 23)."""

from __future__ import annotations

import copy
import json
import logging

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import hinge_sc as hs

GENES = ["EPCAM", "ERBB2", "KRT19", "CD3E", "PTPRC", "COL1A1"]
FULLRES = (300, 400)  # (height, width) of the full-resolution image, px
SCALEF = 0.25  # HEST's tissue_downscaled_fullres_scalef


def hest_meta(**changes) -> dict:
    """A metadata JSON with the keys of HEST-1k's release (values of a Visium sample)."""
    meta = {"id": "TENX1", "dataset_title": "Test", "organ": "Breast", "species": "Homo sapiens",
            "st_technology": "Visium", "inter_spot_dist": 100.0, "spot_diameter": 55.0, "spots_under_tissue": 12,
            "pixel_size_um_embedded": 2.1, "pixel_size_um_estimated": 2.0, "magnification": "5x",
            "fullres_px_width": FULLRES[1], "fullres_px_height": FULLRES[0], "oncotree_code": None}  # fmt: skip
    meta.update(changes)
    return meta


def write_h5ad(file, counts, xy, barcodes, genes, image=None, *, scalef=SCALEF) -> None:
    """An h5ad as HEST writes it: raw counts, ``pxl_*`` columns, ``obsm["spatial"]``, ``uns["spatial"]["ST"]``."""
    obs = pd.DataFrame({"in_tissue": 1, "array_row": np.arange(len(xy)) // 4, "array_col": np.arange(len(xy)) % 4,
                        "pxl_col_in_fullres": xy[:, 0], "pxl_row_in_fullres": xy[:, 1]},
                       index=pd.Index(barcodes))  # fmt: skip
    adata = ad.AnnData(sparse.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.obsm["spatial"] = xy
    lib = {"scalefactors": {"spot_diameter_fullres": 27.5, "tissue_downscaled_fullres_scalef": scalef}}
    if image is not None:
        lib["images"] = {"downscaled_fullres": image}
    adata.uns["spatial"] = {"ST": lib}
    file.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(file)


def write_sample(root, sample_id: str, *, n_spots: int = 12, meta: dict | None = None, seed: int = 0) -> dict:
    """One HEST-1k sample under ``root`` (st, metadata, wsis, thumbnails, patches); returns what was written."""
    import tifffile

    rng = np.random.default_rng(seed)
    counts = rng.poisson(4.0, size=(n_spots, len(GENES))).astype(np.int32)
    xy = np.column_stack([rng.uniform(120, 280, n_spots), rng.uniform(100, 200, n_spots)]).round(1)
    barcodes = [f"AAAC{i:04d}-1" for i in range(n_spots)]
    full = rng.integers(0, 255, size=(*FULLRES, 3), dtype=np.uint8)
    small = np.asarray(Image.fromarray(full).resize((100, 75)))
    write_h5ad(root / "st" / f"{sample_id}.h5ad", counts, xy, barcodes, GENES, small)
    (root / "metadata").mkdir(exist_ok=True)
    (root / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta if meta is not None else hest_meta()))
    (root / "wsis").mkdir(exist_ok=True)
    tifffile.imwrite(root / "wsis" / f"{sample_id}.tif", full, photometric="rgb")
    (root / "thumbnails").mkdir(exist_ok=True)
    Image.fromarray(small).save(root / "thumbnails" / f"{sample_id}_downscaled_fullres.jpeg", quality=95)
    n_patches = n_spots - 2  # HEST drops spots off the tissue
    patches = rng.integers(0, 255, size=(n_patches, 224, 224, 3), dtype=np.uint8)
    (root / "patches").mkdir(exist_ok=True)
    with h5py.File(root / "patches" / f"{sample_id}.h5", "w") as f:  # as hestcore's save_hdf5 writes it
        f["img"] = patches
        f["coords"] = (xy[:n_patches] - 112).astype(np.int64)
        f["barcode"] = np.array(barcodes[:n_patches], dtype="S")[:, None]
    return {"counts": counts, "xy": xy, "barcodes": barcodes, "small": small, "patches": patches}


@pytest.fixture
def hest_root(tmp_path):
    written = {"TENX1": write_sample(tmp_path, "TENX1"), "TENX2": write_sample(tmp_path, "TENX2", n_spots=8, seed=1)}
    return tmp_path, written


def test_reads_spots_counts_and_scale(hest_root):
    root, written = hest_root
    adata = hs.io.read_hest(root)
    assert adata.n_obs == 20 and list(adata.var_names) == GENES
    assert list(adata.obs["section"].cat.categories) == ["TENX1", "TENX2"]
    assert list(adata.obs_names[:2]) == ["TENX1_AAAC0000-1", "TENX1_AAAC0001-1"]
    assert adata.obs["barcode"].iloc[-1] == "AAAC0007-1"
    np.testing.assert_array_equal(adata.X.toarray(), np.vstack([w["counts"] for w in written.values()]))
    np.testing.assert_allclose(adata.obsm["spatial"], np.vstack([w["xy"] for w in written.values()]))
    lib = adata.uns["spatial"]["TENX1"]
    assert lib["scalefactors"]["microns_per_pixel"] == 2.0
    assert lib["metadata"]["microns_per_pixel_source"] == "hest_pixel_size_um_estimated"
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(27.5)  # 55 µm / 2 µm per px
    assert lib["metadata"]["spot_diameter_um"] == 55.0 and lib["metadata"]["hest"] == hest_meta()
    assert lib["metadata"]["source_image_path"].endswith("wsis/TENX1.tif")
    np.testing.assert_array_equal(lib["images"]["hires"], written["TENX1"]["small"])
    assert lib["scalefactors"]["tissue_hires_scalef"] == SCALEF


def test_features_from_the_slide_file(hest_root):
    root, _ = hest_root
    adata = hs.io.read_hest(root, "TENX1")
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    params = adata.uns["X_histology"]["params"]
    assert adata.obsm["X_histology"].shape == (12, 2 * 80) and params["microns_per_pixel"] == {"TENX1": 2.0}  # + field
    assert params["patch_px"]["TENX1"] == 56  # 112 µm at 2 µm/px, cut from wsis/TENX1.tif


@pytest.mark.parametrize(
    ("changes", "mpp", "source"),
    [({}, 2.0, "hest_pixel_size_um_estimated"), ({"pixel_size_um_estimated": None}, 2.1, "hest_pixel_size_um_embedded"),
     ({"pixel_size_um_estimated": float("nan")}, 2.1, "hest_pixel_size_um_embedded")],
    ids=["estimated", "embedded-if-null", "embedded-if-nan"],
)  # fmt: skip
def test_microns_per_pixel(tmp_path, changes, mpp, source):
    write_sample(tmp_path, "S1", meta=hest_meta(**changes))
    lib = hs.io.read_hest(tmp_path).uns["spatial"]["S1"]
    assert lib["scalefactors"]["microns_per_pixel"] == mpp and lib["metadata"]["microns_per_pixel_source"] == source
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55.0 / mpp)


@pytest.mark.parametrize(("technology", "diameter"), [("Visium", 55.0), ("Spatial Transcriptomics", 100.0)])
def test_spot_diameter_of_the_technology(tmp_path, caplog, technology, diameter):
    write_sample(tmp_path, "S1", meta=hest_meta(spot_diameter=None, st_technology=technology))
    with caplog.at_level(logging.INFO, logger="hinge_sc.io._hest"):
        lib = hs.io.read_hest(tmp_path).uns["spatial"]["S1"]
    assert lib["metadata"]["spot_diameter_um"] == diameter
    assert lib["metadata"]["spot_diameter_source"] == "st_technology_default"
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(diameter / 2.0)
    assert f"using {diameter:g} µm" in caplog.text


@pytest.mark.parametrize("technology", ["Xenium", "Visium HD"])
def test_pooled_bins_take_their_pitch(tmp_path, caplog, technology):
    """HEST pools Xenium transcripts and Visium HD bins into abutting squares; their side is the spots' pitch."""
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1).reshape(-1, 2) * 50.0 + 100  # 50 px = 100 µm
    write_h5ad(tmp_path / "st" / "P1.h5ad", np.ones((12, len(GENES)), np.int32), grid, list(map(str, range(12))),
               GENES, np.zeros((75, 100, 3), np.uint8))  # fmt: skip
    (tmp_path / "metadata").mkdir()
    spot = 2.0 if technology == "Visium HD" else None  # HEST-1k: the raw 2 µm bins, resp. nothing
    (tmp_path / "metadata" / "P1.json").write_text(json.dumps(hest_meta(st_technology=technology, spot_diameter=spot)))
    with caplog.at_level(logging.INFO, logger="hinge_sc.io._hest"):
        lib = hs.io.read_hest(tmp_path).uns["spatial"]["P1"]
    assert lib["metadata"]["spot_diameter_um"] == pytest.approx(100.0) and "squares of side 100 µm" in caplog.text
    assert lib["metadata"]["spot_diameter_source"] == "pooled_bin_pitch"
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(50.0)


def test_arguments_override_the_metadata(tmp_path):
    write_sample(tmp_path, "X1", meta=hest_meta(spot_diameter=None, st_technology="Slide-seq"))
    with pytest.raises(ValueError, match=r"X1\.json: no 'spot_diameter'.*'Slide-seq'.*`spot_diameter_um=`"):
        hs.io.read_hest(tmp_path)
    lib = hs.io.read_hest(tmp_path, spot_diameter_um={"X1": 100}, microns_per_pixel=0.5).uns["spatial"]["X1"]
    assert lib["scalefactors"]["spot_diameter_fullres"] == 200.0
    assert lib["metadata"]["microns_per_pixel_source"] == lib["metadata"]["spot_diameter_source"] == "argument"


@pytest.mark.parametrize(
    ("image", "expected"), [("embedded", (75, 100)), ("thumbnail", (75, 100)), ("none", None)]
)
def test_image_choices(hest_root, image, expected):
    root, written = hest_root
    lib = hs.io.read_hest(root, ["TENX2"], image=image, wsi=False).uns["spatial"]["TENX2"]
    assert "source_image_path" not in lib["metadata"]
    if expected is None:
        assert "images" not in lib and "tissue_hires_scalef" not in lib["scalefactors"]
        return
    assert lib["images"]["hires"].shape == (*expected, 3)
    assert lib["scalefactors"]["tissue_hires_scalef"] == pytest.approx(100 / FULLRES[1])
    assert np.abs(lib["images"]["hires"].astype(int) - written["TENX2"]["small"]).mean() < 12  # JPEG


def test_sample_folder_layout(tmp_path):
    """A folder written by HEST's ``HESTData.save``: ``aligned_adata.h5ad`` and ``metrics.json``."""
    write_sample(tmp_path / "hest", "S1")
    sample = tmp_path / "S1_processed"
    sample.mkdir()
    (tmp_path / "hest" / "st" / "S1.h5ad").rename(sample / "aligned_adata.h5ad")
    (tmp_path / "hest" / "metadata" / "S1.json").rename(sample / "metrics.json")
    adata = hs.io.read_hest(sample, "S1")
    assert list(adata.uns["spatial"]) == ["S1"] and adata.n_obs == 12
    assert "source_image_path" not in adata.uns["spatial"]["S1"]["metadata"]  # no aligned_fullres_HE.tif


@pytest.mark.parametrize(
    ("setup", "call", "error", "match"),
    [
        (None, lambda r: hs.io.read_hest(r, ["TENX1", "TENX9"]), ValueError,
         r"`ids` has ids not found in .*st: \['TENX9'\]; available: TENX1, TENX2"),
        (None, lambda r: hs.io.read_hest(r / "nope"), FileNotFoundError, r"no such folder.*HEST-1k folder"),
        (lambda r: (r / "metadata" / "TENX2.json").unlink(), hs.io.read_hest, FileNotFoundError,
         r"'TENX2' has no metadata JSON.*metadata/<id>\.json"),
        (lambda r: (r / "metadata" / "TENX2.json").write_text(json.dumps(hest_meta(pixel_size_um_estimated=None,
                                                                                     pixel_size_um_embedded=""))),
         hs.io.read_hest, ValueError, r"TENX2\.json: neither 'pixel_size_um_estimated' nor 'pixel_size_um_embedded'"),
        (lambda r: (r / "thumbnails" / "TENX2_downscaled_fullres.jpeg").unlink(),
         lambda r: hs.io.read_hest(r, "TENX2", image="thumbnail"), FileNotFoundError, r"no thumbnail of sample"),
        (None, lambda r: hs.io.read_hest(r, image="hires"), ValueError, r"`image='hires'`: expected one of"),
        (None, lambda r: hs.io.read_hest(r, microns_per_pixel=-1), ValueError, r"`microns_per_pixel` must be"),
    ],
    ids=["unknown-id", "no-folder", "no-metadata", "no-mpp", "no-thumbnail", "bad-image", "bad-mpp"],
)  # fmt: skip
def test_errors(hest_root, setup, call, error, match):
    root, _ = hest_root
    if setup is not None:
        setup(root)
    with pytest.raises(error, match=match):
        call(root)


def test_read_hest_patches(hest_root):
    root, written = hest_root
    barcodes, coords, images = hs.io.read_hest_patches(root, "TENX1")
    np.testing.assert_array_equal(images, written["TENX1"]["patches"])
    assert list(barcodes) == written["TENX1"]["barcodes"][:10] and coords.shape == (10, 2)
    adata = hs.io.read_hest(root, "TENX1")
    assert adata.obs["barcode"].isin(barcodes).sum() == 10
    assert adata.uns["spatial"]["TENX1"]["metadata"]["hest_patches_path"].endswith("patches/TENX1.h5")
    with h5py.File(root / "bad.h5", "w") as f:
        f["img"] = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"bad\.h5 has no dataset \['coords', 'barcode'\]"):
        hs.io.read_hest_patches(root / "bad.h5")
    with pytest.raises(ValueError, match="pass `sample_id=`"):
        hs.io.read_hest_patches(root)


def test_real_her2st_section_round_trip(her2st_c, tmp_path):
    """Section C2 of HER2ST (HEST-1k's SPA cohort) written in HEST's layout reads back with the same counts, spot
    positions, µm/px and image geometry: the same features come out."""
    c2 = her2st_c[her2st_c.obs["section"] == "C2"].copy()
    c2.uns["spatial"] = {"C2": copy.deepcopy(her2st_c.uns["spatial"]["C2"])}
    lib = c2.uns["spatial"]["C2"]
    mpp = lib["scalefactors"]["microns_per_pixel"]
    barcodes = [name.removeprefix("C2_") for name in c2.obs_names]
    write_h5ad(tmp_path / "st" / "SPA_C2.h5ad", sparse.csr_matrix(c2.X).astype(np.int32), c2.obsm["spatial"],
               barcodes, list(c2.var_names), lib["images"]["hires"], scalef=lib["scalefactors"]["tissue_hires_scalef"])
    meta = hest_meta(id="SPA_C2", st_technology="Spatial Transcriptomics", spot_diameter=100.0, inter_spot_dist=200.0,
                     pixel_size_um_estimated=mpp, pixel_size_um_embedded=None,
                     fullres_px_width=lib["metadata"]["fullres_width"],
                     fullres_px_height=lib["metadata"]["fullres_height"])  # fmt: skip
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "SPA_C2.json").write_text(json.dumps(meta))

    adata = hs.io.read_hest(tmp_path)
    hest_lib = adata.uns["spatial"]["SPA_C2"]
    assert list(adata.var_names) == list(c2.var_names) and list(adata.obs["barcode"]) == barcodes
    assert (adata.X != c2.X).nnz == 0
    np.testing.assert_array_equal(adata.obsm["spatial"], c2.obsm["spatial"])
    assert hest_lib["scalefactors"]["microns_per_pixel"] == mpp
    spot = lib["scalefactors"]["spot_diameter_fullres"]  # 100 µm
    assert hest_lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(spot)
    assert hest_lib["scalefactors"]["tissue_hires_scalef"] == lib["scalefactors"]["tissue_hires_scalef"]

    del lib["metadata"]["source_image_path"]  # both from the same hires image
    kwargs = {"views": 1, "section_key": None, "show_progress_bar": False}
    hs.pp.histology_features(c2, **kwargs)
    hs.pp.histology_features(adata, **kwargs)
    np.testing.assert_allclose(adata.obsm["X_histology"], c2.obsm["X_histology"], rtol=1e-5, atol=1e-6)
