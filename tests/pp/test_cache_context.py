"""Caching of histology features and the spatial-context options (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc.pp._handcrafted import FEATURE_NAMES


class CountingEncoder(torch.nn.Module):
    """Mean colour of the patch; counts the patches it embeds."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.n_seen = 0

    def forward(self, x):
        self.n_seen += len(x)
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1) * self.scale


@pytest.fixture
def crop(her2st_crop):
    return her2st_crop.copy()


def test_same_settings_are_skipped(crop):
    enc = CountingEncoder()
    hs.pp.histology_features(crop, encoder=enc, out_size=16, context=None, standardize=None, show_progress_bar=False)
    n_first = enc.n_seen
    assert n_first == crop.n_obs * 8
    before = crop.obsm["X_histology_views"].copy()
    hs.pp.histology_features(crop, encoder=enc, out_size=16, context=None, standardize=None, show_progress_bar=False)
    assert enc.n_seen == n_first  # nothing recomputed
    np.testing.assert_array_equal(crop.obsm["X_histology_views"], before)


def test_changed_spots_are_recomputed(crop):
    hs.pp.histology_features(crop, views=1, show_progress_bar=False)
    crop.obsm["spatial"] = crop.obsm["spatial"] + 5.0
    with pytest.raises(KeyError, match="other settings, spots or images"):
        hs.pp.histology_features(crop, views=1, show_progress_bar=False)
    hs.pp.histology_features(crop, views=1, overwrite=True, show_progress_bar=False)


def test_cache_dir_reuses_features(crop, tmp_path):
    enc = CountingEncoder()
    first = hs.pp.histology_features(crop, encoder=enc, out_size=16, cache_dir=tmp_path, copy=True,
                                     show_progress_bar=False)  # fmt: skip
    assert len(list(tmp_path.glob("*.npy"))) == 1
    n_first = enc.n_seen
    second = hs.pp.histology_features(crop, encoder=enc, out_size=16, cache_dir=tmp_path, copy=True,
                                      show_progress_bar=False)  # fmt: skip
    assert enc.n_seen == n_first
    np.testing.assert_array_equal(first.obsm["X_histology_views"], second.obsm["X_histology_views"])
    # other weights, other fingerprint: computed again
    with torch.no_grad():
        enc.scale.fill_(2.0)
    hs.pp.histology_features(crop, encoder=enc, out_size=16, cache_dir=tmp_path, show_progress_bar=False)
    assert enc.n_seen == 2 * n_first
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_knn_context_is_mean_of_neighbours(crop):
    hs.pp.histology_features(crop, views=8, context="knn", context_k=3, standardize=None,
                             show_progress_bar=False)  # fmt: skip
    x, views = crop.obsm["X_histology"], crop.obsm["X_histology_views"]
    d = len(FEATURE_NAMES)
    assert x.shape == (crop.n_obs, 2 * d) and views.shape == (crop.n_obs, 8, 2 * d)
    dist = np.linalg.norm(crop.obsm["spatial"][:, None] - crop.obsm["spatial"][None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nb = np.argsort(dist[0])[:3]
    np.testing.assert_allclose(x[0, d:], x[nb, :d].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(views[0, 5, d:], views[nb, 5, :d].mean(0), rtol=1e-5, atol=1e-6)
    params = crop.uns["X_histology"]["params"]
    assert params["context"] == "knn" and params["context_k"] == 3 and params["n_features"] == 2 * d


def test_field_context_sees_a_larger_patch(crop):
    hs.pp.histology_features(crop, views=1, context="field", context_scale=3.0, standardize=None,
                             show_progress_bar=False)  # fmt: skip
    x = crop.obsm["X_histology"]
    d = len(FEATURE_NAMES)
    own = hs.pp.extract_patches(crop, out_size=64, show_progress_bar=False)
    alone = hs.pp.histology_features(crop, views=1, context=None, standardize=None, copy=True, key_added="own",
                                     show_progress_bar=False).obsm["own"]  # fmt: skip
    np.testing.assert_allclose(x[:, :d], alone, rtol=1e-6)
    assert not np.allclose(x[:, :d], x[:, d:])
    assert own.shape[0] == crop.n_obs and crop.uns["X_histology"]["params"]["context_scale"] == 3.0


@pytest.mark.parametrize("context", ["knn", "field"])
def test_context_for_a_single_isolated_spot_and_a_spot_at_the_image_border(crop, context):
    """Issue 13: a spot alone in its section gets its own features as knn context; a spot whose context field
    reaches past the image edge still gets finite features (the field is padded, not dropped)."""
    one = crop[:1].copy()
    hs.pp.histology_features(one, views=1, context=context, standardize=None, show_progress_bar=False)
    x = one.obsm["X_histology"]
    d = len(FEATURE_NAMES)
    assert x.shape == (1, 2 * d) and np.isfinite(x).all()
    if context == "knn":
        np.testing.assert_array_equal(x[0, d:], x[0, :d])
    border = crop[:2].copy()
    border.obsm["spatial"] = np.array([[4.0, 4.0], [200.0, 200.0]])  # px in the crop; the first at the corner
    hs.pp.histology_features(border, views=1, context=context, standardize=None, show_progress_bar=False)
    assert np.isfinite(border.obsm["X_histology"]).all()


def test_a_corrupted_cache_is_recomputed(tmp_path):
    """A cache file whose values changed on disk (same shape) is not read back as features (issue 24)."""
    import warnings

    import numpy as np

    from hinge_sc.pp._cache import read_cache, write_cache

    names = [f"s{i}" for i in range(4)]
    feats = np.arange(24, dtype=np.float32).reshape(4, 1, 6)
    path = tmp_path / "f.npy"
    write_cache(path, feats, names)
    np.testing.assert_array_equal(read_cache(path, names, 1), feats)
    raw = bytearray(path.read_bytes())
    raw[-4:] = np.float32(1e3).tobytes()  # one value changed, same shape
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_cache(path, names, 1) is None
    assert any("checksum" in str(w.message) for w in caught)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="`cache_dir`"):
        write_cache(blocker / "f.npy", feats, names)
