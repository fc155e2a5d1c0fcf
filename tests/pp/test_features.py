from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc.pp._features import FEATURE_NAMES, VIEW_NAMES, dihedral_view, handcrafted_features
from hinge_sc.pp._patches import PAD_VALUE


@pytest.fixture(scope="module")
def c2(her2st_c):
    return her2st_c[her2st_c.obs["section"] == "C2"].copy()


@pytest.fixture(scope="module")
def featurized(her2st_c):
    adata = her2st_c.copy()
    hs.pp.histology_features(adata, context=None, standardize=None, show_progress_bar=False)  # the encoder's own output
    return adata


def _toy(img: np.ndarray, xy, mpp: float = 1.0) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((len(xy), 1), dtype=np.float32))
    adata.obsm["spatial"] = np.asarray(xy, dtype=float)
    adata.uns["spatial"] = {
        "lib": {"images": {"hires": img}, "scalefactors": {"tissue_hires_scalef": 1.0, "microns_per_pixel": mpp}}
    }
    return adata


# --- patches -------------------------------------------------------------------------------------------------


def test_patch_is_centred_on_spot(c2):
    from PIL import Image

    from hinge_sc.pp._image import pil_pixel_limit

    patches = hs.pp.extract_patches(c2, out_size=None, show_progress_bar=False)
    side = round(112 / c2.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"])
    assert patches.shape == (c2.n_obs, side, side, 3) and patches.dtype == np.uint8
    path = c2.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    with pil_pixel_limit(path), Image.open(path) as im:
        for i in (0, 50, 186):
            cx, cy = c2.obsm["spatial"][i]
            left, top = round(cx) - side // 2, round(cy) - side // 2
            ref = np.asarray(im.crop((left, top, left + side, top + side)).convert("RGB"))
            np.testing.assert_array_equal(patches[i], ref)


def test_hires_fallback_covers_same_tissue(c2):
    full = hs.pp.extract_patches(c2, out_size=16, show_progress_bar=False).astype(float)
    hires_only = c2.copy()
    del hires_only.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    low = hs.pp.extract_patches(hires_only, out_size=16, show_progress_bar=False).astype(float)
    corr = [np.corrcoef(a.mean(-1).ravel(), b.mean(-1).ravel())[0, 1] for a, b in zip(full, low, strict=True)]
    assert np.median(corr) > 0.9


def test_missing_source_image_warns(c2):
    adata = c2[:3].copy()
    adata.uns["spatial"]["C2"]["metadata"]["source_image_path"] = "/nonexistent/C2.jpg"
    with pytest.warns(UserWarning, match="is missing"):
        hs.pp.extract_patches(adata, out_size=8, show_progress_bar=False)


def test_border_is_padded_white():
    img = np.zeros((50, 50, 3), dtype=np.uint8)
    adata = _toy(img, [[2.0, 2.0], [25.0, 25.0]])
    patches = hs.pp.extract_patches(adata, patch_size_um=10, section_key=None, out_size=None, show_progress_bar=False)
    assert patches.shape == (2, 10, 10, 3)
    assert (patches[0, :3, :3] == PAD_VALUE).all() and (patches[0, 3:, 3:] == 0).all()
    assert (patches[1] == 0).all()


def test_spots_outside_image_raise():
    adata = _toy(np.zeros((50, 50, 3), dtype=np.uint8), [[10.0, 10.0], [60.0, 10.0]])
    with pytest.raises(ValueError, match="1 spots of section 'lib' lie outside"):
        hs.pp.extract_patches(adata, section_key=None, show_progress_bar=False)


def test_unknown_mpp_raises():
    adata = _toy(np.zeros((50, 50, 3), dtype=np.uint8), [[10.0, 10.0]])
    del adata.uns["spatial"]["lib"]["scalefactors"]["microns_per_pixel"]
    with pytest.raises(ValueError, match="microns_per_pixel="):
        hs.pp.extract_patches(adata, section_key=None, show_progress_bar=False)
    patches = hs.pp.extract_patches(adata, microns_per_pixel=2.0, patch_size_um=8, section_key=None, out_size=None)
    assert patches.shape == (1, 4, 4, 3)


def test_section_without_image_raises(her2st_c):
    adata = her2st_c.copy()
    del adata.uns["spatial"]["C3"]
    with pytest.raises(ValueError, match="Section 'C3' has no entry"):
        hs.pp.histology_features(adata, show_progress_bar=False)


# --- features ------------------------------------------------------------------------------------------------


def test_feature_shapes(featurized):
    x, v = featurized.obsm["X_histology"], featurized.obsm["X_histology_views"]
    assert x.shape == (featurized.n_obs, len(FEATURE_NAMES)) and x.dtype == np.float32
    assert v.shape == (featurized.n_obs, 8, len(FEATURE_NAMES)) and v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_array_equal(v[:, 0], x)


def test_views_come_from_transformed_patches(featurized):
    v = featurized.obsm["X_histology_views"]
    f = {name: i for i, name in enumerate(FEATURE_NAMES)}
    view = {name: i for i, name in enumerate(VIEW_NAMES)}
    assert not np.allclose(v[:, view["rot90"]], v[:, 0])
    # a 90° rotation swaps x and y; an up-down flip negates top-minus-bottom
    np.testing.assert_allclose(v[:, view["rot90"], f["contrast_x1"]], v[:, 0, f["contrast_y1"]], rtol=1e-4)
    np.testing.assert_allclose(
        v[:, view["flip_ud"], f["grey_top_minus_bottom"]], -v[:, 0, f["grey_top_minus_bottom"]], atol=1e-5
    )
    np.testing.assert_allclose(v[:, view["rot180"], f["rgb_mean_r"]], v[:, 0, f["rgb_mean_r"]], rtol=1e-4)


def test_params(featurized):
    params = featurized.uns["X_histology"]["params"]
    assert params["encoder"] == "handcrafted" and params["views"] == 8
    assert params["microns_per_pixel"]["C2"] == pytest.approx(0.69, abs=0.02)
    assert params["patch_px"]["C2"] == round(112 / params["microns_per_pixel"]["C2"])
    assert list(params["view_names"]) == list(VIEW_NAMES)


def test_overwrite_protection(featurized):
    with pytest.raises(KeyError, match="already exists and was computed with other settings"):
        hs.pp.histology_features(featurized, patch_size_um=150, show_progress_bar=False)


def test_copy_and_single_view(c2):
    small = c2[:10].copy()
    out = hs.pp.histology_features(small, views=1, context=None, standardize=None, copy=True, show_progress_bar=False)
    assert "X_histology" not in small.obsm
    assert out.obsm["X_histology"].shape == (10, len(FEATURE_NAMES)) and "X_histology_views" not in out.obsm


def test_torch_encoder(c2):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    small = c2[:12].copy()
    hs.pp.histology_features(
        small, encoder=model, out_size=32, batch_size=5, context=None, standardize=None, key_added="X_cnn",
        show_progress_bar=False,
    )
    assert small.obsm["X_cnn_views"].shape == (12, 8, 4)
    patches = hs.pp.extract_patches(small, out_size=32, show_progress_bar=False)
    with torch.no_grad():
        ref = model(torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(small.obsm["X_cnn"], ref, rtol=1e-5, atol=1e-6)
    assert small.uns["X_cnn"]["params"]["encoder"] == "Sequential"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"views": 4}, "`views` must be 1"),
        ({"encoder": "not_a_model"}, "not known"),
        ({"context": "ring"}, "`context`"),
    ],
)
def test_bad_arguments(c2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hs.pp.histology_features(c2, show_progress_bar=False, **kwargs)


def test_handcrafted_on_synthetic_patches():
    white = np.full((2, 16, 16, 3), 255, dtype=np.uint8)
    stripes = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    stripes[:, :, ::2] = 255  # vertical stripes: grey changes along x only
    f = handcrafted_features(np.concatenate([white, stripes]))
    i = {name: k for k, name in enumerate(FEATURE_NAMES)}
    assert f.shape == (3, len(FEATURE_NAMES)) and np.isfinite(f).all()
    assert f[0, i["tissue_fraction"]] == 0 and f[0, i["nuclei_fraction"]] == 0
    assert f[2, i["contrast_x1"]] > 0.5 and f[2, i["contrast_y1"]] == 0


def test_dihedral_views_are_distinct():
    p = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)
    views = [dihedral_view(p, k)[0, ..., 0].tolist() for k in range(8)]
    assert len({str(v) for v in views}) == 8
    np.testing.assert_array_equal(dihedral_view(p, 6)[0, ..., 0], p[0, ..., 0].T)



# --- deprecated `library_key` (issue 10: one name per concept, `section_key`) -------------------------------------


def test_extract_patches_library_key_is_deprecated():
    adata = _toy(np.zeros((50, 50, 3), dtype=np.uint8), [[25.0, 25.0]])
    adata.obs["slice"] = "lib"
    with pytest.warns(FutureWarning, match="library_key"):
        old = hs.pp.extract_patches(adata, patch_size_um=10, library_key="slice", out_size=None)
    new = hs.pp.extract_patches(adata, patch_size_um=10, section_key="slice", out_size=None)
    np.testing.assert_array_equal(old, new)


def test_histology_features_library_key_is_deprecated(c2):
    small = c2[:4].copy()
    with pytest.warns(FutureWarning, match="library_key"):
        out = hs.pp.histology_features(small, views=1, library_key="section", context=None, standardize=None,
                                       copy=True, show_progress_bar=False)  # fmt: skip
    assert out.obsm["X_histology"].shape == (4, len(FEATURE_NAMES))


def test_library_key_and_another_section_key_raise(c2):
    with pytest.raises(TypeError, match="Pass `section_key` only"):
        hs.pp.histology_features(c2, library_key="section", section_key="other", show_progress_bar=False)


def test_default_section_is_the_only_library():
    adata = _toy(np.zeros((50, 50, 3), dtype=np.uint8), [[25.0, 25.0]])  # no obs["section"], one library
    patches = hs.pp.extract_patches(adata, patch_size_um=10, out_size=None, show_progress_bar=False)
    assert patches.shape == (1, 10, 10, 3)
