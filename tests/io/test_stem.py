"""Stem / HINGE data folders (HEST h5ad + ``processed_data/1spot_*_ebd/*.pt`` + gene list) written here in the
authors' formats, read by ``hs.io.read_stem`` into features ready for ``HINGE.setup_anndata`` (issue 23)."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import sparse

import hinge_sc as hs
from hinge_sc.io._stem import PIL_TRANSPOSE_TO_VIEW
from hinge_sc.pp._features import VIEW_NAMES, dihedral_view

GENES = ["EPCAM", "ERBB2", "KRT19", "CD3E", "PTPRC", "COL1A1", "MT-CO1"]
SELECTED = ["ERBB2", "EPCAM", "PTPRC"]
SLIDES = {"SPA2": 5, "SPA1": 7}  # slide → spots; all_slide_lst.txt lists SPA2 first
D_UNI, D_CONCH = 16, 8


class NotATensor:
    """An arbitrary object: unpickling one could run code."""


def write_slide(root, slide: str, n_spots: int, rng, *, metadata: bool = True) -> None:
    """``st/<slide>.h5ad`` (HEST's format) and ``metadata/<slide>.json``."""
    counts = sparse.csr_matrix(rng.poisson(3.0, size=(n_spots, len(GENES))).astype(np.float32))
    xy = rng.uniform(200, 800, size=(n_spots, 2))
    obs = pd.DataFrame({"in_tissue": 1, "array_row": np.arange(n_spots), "array_col": 0,
                        "pxl_col_in_fullres": xy[:, 0], "pxl_row_in_fullres": xy[:, 1]},
                       index=pd.Index([f"{i}x{i + 1}" for i in range(n_spots)]))  # fmt: skip
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=pd.Index(GENES)))
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = {"ST": {"images": {"downscaled_fullres": np.zeros((50, 50, 3), np.uint8)},
                                   "scalefactors": {"spot_diameter_fullres": 150.0,
                                                    "tissue_downscaled_fullres_scalef": 0.05}}}  # fmt: skip
    (root / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "st" / f"{slide}.h5ad")
    if metadata:
        (root / "metadata").mkdir(exist_ok=True)
        meta = {"id": slide, "st_technology": "Spatial Transcriptomics", "spot_diameter": 100.0,
                "inter_spot_dist": 200.0, "pixel_size_um_estimated": 2 / 3, "pixel_size_um_embedded": None}  # fmt: skip
        (root / "metadata" / f"{slide}.json").write_text(json.dumps(meta))


@pytest.fixture
def stem_root(tmp_path):
    """A Stem dataset folder with UNI and CONCH embeddings (and UNI's 7 augmented views) of two slides."""
    rng = np.random.default_rng(0)
    processed = tmp_path / "processed_data"
    written = {}
    for slide, n in SLIDES.items():
        write_slide(tmp_path, slide, n, rng)
        for enc, dim in (("uni", D_UNI), ("conch", D_CONCH)):
            (processed / f"1spot_{enc}_ebd").mkdir(parents=True, exist_ok=True)
            written[slide, enc] = torch.randn(n, dim)
            torch.save(written[slide, enc], processed / f"1spot_{enc}_ebd" / f"{slide}_{enc}.pt")
        (processed / "1spot_uni_ebd_aug").mkdir(exist_ok=True)
        written[slide, "uni_aug"] = torch.randn(n, 7, D_UNI)
        torch.save(written[slide, "uni_aug"], processed / "1spot_uni_ebd_aug" / f"{slide}_uni_aug.pt")
    (processed / "selected_gene_list.txt").write_text("\n".join(SELECTED) + "\n")
    (processed / "all_slide_lst.txt").write_text("\n".join(SLIDES) + "\n")
    return tmp_path, written


def test_features_aligned_to_spots(stem_root):
    root, written = stem_root
    adata = hs.io.read_stem(root)
    assert list(adata.obs["section"].cat.categories) == list(SLIDES) and adata.n_obs == sum(SLIDES.values())
    expected = torch.cat([written["SPA2", "uni"], written["SPA1", "uni"]]).numpy()
    np.testing.assert_array_equal(adata.obsm["X_uni"], expected)
    assert adata.obsm["X_uni"].dtype == np.float32
    params = adata.uns["X_uni"]["params"]
    assert params["encoder"] == "uni" and params["n_features"] == D_UNI and params["source"] == "stem"
    assert params["files"]["SPA1"][0].endswith("processed_data/1spot_uni_ebd/SPA1_uni.pt")
    assert params["microns_per_pixel"] == {"SPA2": pytest.approx(2 / 3), "SPA1": pytest.approx(2 / 3)}
    assert params["patch_px"]["SPA1"] == 224  # Stem: 224 px, as the spot (150 px) is smaller
    assert adata.uns["spatial"]["SPA1"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(150.0)


def test_encoders_concatenated_in_order(stem_root):
    root, written = stem_root
    adata = hs.io.read_stem(root, "SPA1", encoder=["uni", "conch"])
    np.testing.assert_array_equal(adata.obsm["X_uni_conch"],
                                  torch.cat([written["SPA1", "uni"], written["SPA1", "conch"]], 1).numpy())  # fmt: skip
    params = adata.uns["X_uni_conch"]["params"]
    assert params["encoder"] == "uni+conch" and params["n_features"] == D_UNI + D_CONCH  # as hs.pp names the pair


def test_views_in_dihedral_order(stem_root):
    root, written = stem_root
    adata = hs.io.read_stem(root, ["SPA1"], views=True)
    views = adata.obsm["X_uni_views"]
    assert views.shape == (7, len(VIEW_NAMES), D_UNI)
    np.testing.assert_array_equal(views[:, 0], adata.obsm["X_uni"])
    for k, view in enumerate(PIL_TRANSPOSE_TO_VIEW):
        np.testing.assert_array_equal(views[:, view], written["SPA1", "uni_aug"][:, k].numpy())
    assert adata.uns["X_uni"]["params"]["views"] == 8


@pytest.mark.parametrize("k", range(7))
def test_pil_transpose_is_the_named_view(k):
    """Stem's view k is ``Image.transpose(k)``; it is view ``PIL_TRANSPOSE_TO_VIEW[k]`` of ``hs.pp.dihedral_view``."""
    patch = np.random.default_rng(k).integers(0, 255, size=(5, 7, 3), dtype=np.uint8)  # not square
    pil = np.asarray(Image.fromarray(patch).transpose(Image.Transpose(k)))
    np.testing.assert_array_equal(pil, dihedral_view(patch[None], PIL_TRANSPOSE_TO_VIEW[k])[0])


@pytest.mark.parametrize(
    ("genes", "expected"),
    [(None, SELECTED), ("selected_gene_list.txt", SELECTED), (["KRT19", "CD3E"], ["KRT19", "CD3E"])],
    ids=["default-file", "file-name", "list"],
)
def test_selected_genes(stem_root, genes, expected):
    root, _ = stem_root
    adata = hs.io.read_stem(root, "SPA2", genes=genes)
    assert list(adata.var_names[adata.var["stem_selected"]]) == [g for g in GENES if g in expected]
    assert adata.uns["stem"]["selected_genes"] == expected and adata.n_vars == len(GENES)


def test_setup_anndata_takes_the_features(stem_root):
    root, _ = stem_root
    adata = hs.io.read_stem(root, views=True)
    adata = adata[:, adata.var["stem_selected"]].copy()
    hs.HINGE.setup_anndata(adata, features_key="X_uni")
    registry = hs.HINGE._get_most_recent_anndata_manager(adata).registry
    assert registry["setup_args"]["views_key"] == "X_uni_views"
    assert registry["feature_provenance"]["encoder"] == "uni"


def test_without_metadata_warns(stem_root):
    root, _ = stem_root
    (root / "metadata" / "SPA1.json").unlink()
    with pytest.warns(UserWarning, match=r"'SPA1' has no metadata JSON.*µm/px"):
        adata = hs.io.read_stem(root)
    lib = adata.uns["spatial"]["SPA1"]
    assert "microns_per_pixel" not in lib["scalefactors"] and lib["scalefactors"]["spot_diameter_fullres"] == 150.0
    assert set(adata.uns["X_uni"]["params"]["microns_per_pixel"]) == {"SPA2"}


def _save(root, obj, name="SPA1_uni.pt"):
    torch.save(obj, root / "processed_data" / "1spot_uni_ebd" / name)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (lambda r: _save(r, torch.zeros(6, D_UNI)), {}, ValueError,
         r"SPA1_uni\.pt: shape \(6, 16\), expected \(n_spots, D\).*\(7 spots; the file has 6 rows\)"),
        (lambda r: _save(r, torch.zeros(7, 2, D_UNI)), {}, ValueError, r"shape \(7, 2, 16\), expected \(n_spots, D\)"),
        (lambda r: _save(r, {"x": NotATensor()}), {}, ValueError, r"holds objects other than tensors"),
        (lambda r: _save(r, {"x": torch.zeros(7, D_UNI)}), {}, TypeError, r"expected one tensor.*a dict with keys"),
        (lambda r: (r / "processed_data" / "1spot_uni_ebd" / "SPA1_uni.pt").unlink(), {}, FileNotFoundError,
         r"No uni embeddings of slide 'SPA1': expected .*SPA1_uni\.pt"),
        (None, {"encoder": "conch", "views": True}, FileNotFoundError, r"No conch embeddings .*SPA2_conch_aug\.pt"),
        (None, {"genes": ["ERBB2", "NOPE1"]}, KeyError, r"`genes` has genes missing .*'NOPE1'"),
        (None, {"genes": "missing.txt"}, FileNotFoundError, r"`genes='missing.txt'`: no such gene list"),
        (None, {"slides": ["SPA3"]}, ValueError, r"`slides` has ids not found .*\['SPA3'\]; available: SPA1, SPA2"),
        (None, {"encoder": ["uni", "uni"]}, TypeError, r"`encoder` must be a name"),
    ],
    ids=["rows", "ndim", "pickled-object", "dict", "no-file", "no-views", "gene", "gene-file", "slide", "encoder"],
)  # fmt: skip
def test_errors(stem_root, change, kwargs, error, match):
    root, _ = stem_root
    if change is not None:
        change(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing of the bad file is unpickled, no warning on the way
        with pytest.raises(error, match=match):
            hs.io.read_stem(root, **kwargs)


def test_not_a_stem_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected Stem's dataset folder with `st/`.*`processed_data/`"):
        hs.io.read_stem(tmp_path)
