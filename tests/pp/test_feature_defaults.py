"""Issue 21: the feature defaults of the one recipe — spatial context and standardisation within each section."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import hinge_sc as hs
from hinge_sc.model._feature_provenance import check_feature_provenance
from hinge_sc.pp._section_stats import within_sections


def test_defaults_add_context_and_standardise_each_section(her2st_c):
    """On real her2st sections the default features carry the context field and are standardised per section:
    each section's identity view has mean 0 and s.d. 1 per feature; the record says so."""
    adata = her2st_c.copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    feats = adata.obsm["X_histology"]
    params = adata.uns["X_histology"]["params"]
    assert feats.shape == (adata.n_obs, 160)  # 80 handcrafted features of the patch + 80 of the context field
    assert params["context"] == "field" and params["standardize"] == "section"
    assert np.isfinite(feats).all()
    for section in ("C2", "C3"):
        rows = feats[(adata.obs["section"] == section).to_numpy()]
        varying = rows.std(axis=0) > 0
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(rows.std(axis=0)[varying], 1, atol=1e-3)
    raw = her2st_c.copy()
    hs.pp.histology_features(raw, views=1, standardize=None, show_progress_bar=False)
    assert raw.uns["X_histology"]["params"]["standardize"] == "none"
    assert raw.uns["X_histology"]["params"]["fingerprint"] != params["fingerprint"]
    c2 = (raw.obs["section"] == "C2").to_numpy()
    expected = within_sections(raw.obsm["X_histology"][:, None], [np.flatnonzero(c2), np.flatnonzero(~c2)])[:, 0]
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)


def test_within_sections_moves_every_view_by_the_identity_views_map(caplog):
    rng = np.random.default_rng(0)
    feats = rng.normal(3.0, 2.0, size=(80, 8, 5))
    feats[:, :, 4] = 7.0  # a constant feature becomes 0
    rows = [np.arange(0, 50), np.arange(50, 80)]
    out = within_sections(feats, rows)
    assert out.dtype == np.float32 and out.shape == feats.shape
    for r in rows:
        identity = feats[r, 0, :4]
        mean, sd = identity.mean(axis=0), identity.std(axis=0)
        np.testing.assert_allclose(out[r, :, :4], (feats[r, :, :4] - mean) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, :, 4], 0)
    with caplog.at_level(logging.WARNING, logger="hinge_sc.pp._section_stats"):
        within_sections(feats[:10], [np.arange(10)])
    assert "10 spots" in caplog.text


def test_bad_standardize_names_the_argument(her2st_crop):
    with pytest.raises(ValueError, match="`standardize` must be 'section' or None"):
        hs.pp.histology_features(her2st_crop.copy(), standardize="slide", show_progress_bar=False)


def test_a_model_refuses_features_standardised_otherwise():
    """Standardised and raw features are not comparable: generating with the other kind raises and says how to fix."""
    trained = {"encoder": "handcrafted", "n_features": 160, "context": "field", "standardize": "section"}
    with pytest.raises(ValueError, match=r"standardize='section'"):
        check_feature_provenance(trained, {**trained, "standardize": "none"}, key="X_histology")
    check_feature_provenance(trained, dict(trained), key="X_histology")  # the same settings pass
    old = {k: v for k, v in trained.items() if k != "standardize"}  # a model saved before the setting existed
    check_feature_provenance(old, {**trained, "standardize": "none"}, key="X_histology")
