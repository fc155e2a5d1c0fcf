from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import hinge_sc as hs


def test_shapes_and_sections(her2st_c):
    assert her2st_c.shape[0] == 187 + 180
    assert list(her2st_c.obs["section"].cat.categories) == ["C2", "C3"]
    assert her2st_c.obs["section"].value_counts().to_dict() == {"C2": 187, "C3": 180}
    assert sparse.isspmatrix_csr(her2st_c.X) or sparse.issparse(her2st_c.X)
    assert her2st_c.X.dtype == np.float32
    assert her2st_c.obs_names.is_unique
    assert her2st_c.obs_names[0].startswith("C2_")


def test_obs_and_obsm(her2st_c):
    assert {"section", "array_x", "array_y", "selected", "label"} <= set(her2st_c.obs.columns)
    assert her2st_c.obs["selected"].all()
    assert her2st_c.obs["label"].isna().all()  # C2 and C3 have no pathologist labels
    xy = her2st_c.obsm["spatial"]
    assert xy.shape == (her2st_c.n_obs, 2)
    assert np.issubdtype(xy.dtype, np.floating)


def test_images_and_scalefactors(her2st_c):
    lib = her2st_c.uns["spatial"]["C2"]
    hires = lib["images"]["hires"]
    assert hires.dtype == np.uint8 and hires.ndim == 3 and hires.shape[2] == 3
    assert max(hires.shape[:2]) == pytest.approx(2000, abs=2)
    sf = lib["scalefactors"]
    assert sf["tissue_hires_scalef"] == pytest.approx(hires.shape[1] / lib["metadata"]["fullres_width"])
    assert sf["microns_per_pixel"] == pytest.approx(0.74, abs=0.1)
    assert sf["spot_diameter_fullres"] == pytest.approx(100 / sf["microns_per_pixel"])
    assert Path(lib["metadata"]["source_image_path"]).is_file()
    assert her2st_c.uns["her2st"]["microns_per_pixel"]["C2"] == sf["microns_per_pixel"]


def test_spot_join_matches_raw_files(her2st_c, her2st_path):
    raw = pd.read_csv(her2st_path / "counts" / "C2.tsv.gz", sep="\t", index_col=0, nrows=3)
    spot = raw.index[1]
    row = her2st_c[f"C2_{spot}"]
    np.testing.assert_array_equal(row.X.toarray().ravel(), raw.loc[spot, her2st_c.var_names].to_numpy(np.float32))
    sel = pd.read_csv(her2st_path / "spots" / "C2_selection.tsv", sep="\t")
    x, y = map(int, spot.split("x"))
    hit = sel[(sel["x"] == x) & (sel["y"] == y)].iloc[0]
    np.testing.assert_allclose(row.obsm["spatial"][0], hit[["pixel_x", "pixel_y"]].to_numpy(float))
    assert (row.obs["array_x"].iloc[0], row.obs["array_y"].iloc[0]) == (x, y)


def test_genes_are_shared_by_all_sections(her2st_c, her2st_path):
    headers = []
    for section in ("C2", "C3"):
        with gzip.open(her2st_path / "counts" / f"{section}.tsv.gz", "rt") as fh:
            headers.append(set(fh.readline().rstrip("\n").split("\t")[1:]))
    assert set(her2st_c.var_names) == headers[0] & headers[1]


def test_labels_and_missing_image_warns(her2st_path):
    with pytest.warns(UserWarning, match="'C1' has no H&E image"):
        adata = hs.datasets.her2st(["C1"], path=her2st_path, show_progress_bar=False)
    assert "C1" not in adata.uns["spatial"]
    assert adata.obs["label"].notna().all()
    assert "invasive cancer" in adata.obs["label"].cat.categories


def test_unknown_section(her2st_path):
    with pytest.raises(ValueError, match=r"unknown ids \['Z9'\]"):
        hs.datasets.her2st(["C2", "Z9"], path=her2st_path)


def test_missing_selection_file(her2st_path, tmp_path):
    (tmp_path / "counts").mkdir()
    (tmp_path / "counts" / "C2.tsv.gz").symlink_to(her2st_path / "counts" / "C2.tsv.gz")
    with pytest.raises(FileNotFoundError, match="no spot file"):
        hs.datasets.her2st(["C2"], path=tmp_path, images=False)


def test_sections_listing_and_env(her2st_path, monkeypatch):
    monkeypatch.setenv("HINGE_SC_DATA_DIR", str(her2st_path.parent))
    table = hs.datasets.her2st_sections()
    assert len(table) == 30 and "B1" not in table.index
    assert table.loc["C2", "has_image"] and table.loc["A1", "has_image"] and not table.loc["D1", "has_image"]
    assert table.loc["A1", "has_labels"]


def test_h5ad_roundtrip(her2st_c, tmp_path):
    import anndata as ad

    her2st_c.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    hires = her2st_c.uns["spatial"]["C3"]["images"]["hires"]
    np.testing.assert_array_equal(back.uns["spatial"]["C3"]["images"]["hires"], hires)
    assert back.uns["spatial"]["C3"]["metadata"]["source_image_path"].endswith("C3.jpg")


def test_download_uses_public_urls(her2st_path, monkeypatch):
    import pooch

    monkeypatch.delenv("HINGE_SC_DATA_DIR", raising=False)
    seen = []
    local = {"ST-cnts": "counts", "ST-spotfiles": "spots", "ST-imgs": "images"}

    def fake_retrieve(url, known_hash, fname, path):
        seen.append(url)
        folder = url.split("/data/")[1].split("/")[0]
        return str(her2st_path / local[folder] / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    adata = hs.datasets.her2st(["C2"], show_progress_bar=False)
    base = "https://github.com/almaan/her2st/raw/master/data/"
    assert seen == [
        base + "ST-cnts/C2.tsv.gz",
        base + "ST-spotfiles/C2_selection.tsv",
        base + "ST-imgs/C/C2/5714_HE_BT_C2.jpg",
    ]
    assert adata.n_obs == 187 and "C2" in adata.uns["spatial"]


def test_a1_second_patient_loads_with_its_display_image(her2st_path):
    """A1 (patient A): the viewer's display image at scale 0.2876, spots on tissue, features finite (issue 21)."""
    import numpy as np

    import hinge_sc as hs

    adata = hs.datasets.her2st(["A1"], path=her2st_path, show_progress_bar=False)
    assert adata.n_obs == 346
    lib = adata.uns["spatial"]["A1"]
    scale = lib["scalefactors"]["tissue_hires_scalef"]
    assert scale == 0.2876
    image = lib["images"]["hires"]
    assert image.shape == (2138, 2000, 3)
    assert "source_image_path" not in lib["metadata"]  # patches come from the display image itself
    assert 3.0 < lib["scalefactors"]["microns_per_pixel"] / scale < 3.4  # ≈ 3.18 µm per display pixel
    xy = np.round(adata.obsm["spatial"] * scale).astype(int)
    assert (xy >= 0).all() and (xy[:, 0] < image.shape[1]).all() and (xy[:, 1] < image.shape[0]).all()
    assert (image[xy[:, 1], xy[:, 0]].mean(axis=1) > 15).all()  # on tissue, not on the black masked background
    assert hs.datasets.her2st_sections(her2st_path).loc["A1", "has_image"]
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    assert np.isfinite(adata.obsm["X_histology"]).all()
    assert adata.obsm["X_histology"].std(axis=0).max() > 0
