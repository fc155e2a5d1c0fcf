"""``hs.tl.add_prediction``: a prediction made elsewhere is stored and scored like HINGE's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs
from hinge_sc.model import Prediction


@pytest.fixture
def adata(her2st_crop):
    totals = np.asarray(her2st_crop.X.sum(axis=0)).ravel()
    return her2st_crop[:, her2st_crop.var_names[np.argsort(-totals)[:8]]].copy()


def _log2(adata):
    return pd.DataFrame(np.log2(1 + adata.X.toarray()), index=adata.obs_names, columns=adata.var_names)


def test_rows_are_aligned_and_scored(adata):
    truth = _log2(adata)
    shuffled = truth.sample(frac=1.0, random_state=0)  # another tool's row order
    rng = np.random.default_rng(0)
    samples = shuffled.to_numpy()[:, None, :] + rng.normal(0, 0.1, (len(shuffled), 4, shuffled.shape[1]))
    hs.tl.add_prediction(adata, Prediction(mean=shuffled, samples=samples), key_added="other",
                         params={"method": "perfect"})  # fmt: skip
    pd.testing.assert_frame_equal(adata.obsm["other"], truth)
    np.testing.assert_allclose(adata.obsm["other_samples"].mean(axis=1), truth.to_numpy(), atol=0.2)
    assert adata.uns["other"]["params"] == {"target_scale": "log2p1", "method": "perfect"}
    per_gene, summary = hs.tl.evaluate(adata, key="other", key_added="other_eval")
    assert summary.loc["mean", "pcc_mean"] == pytest.approx(1.0)


def test_refuses_what_it_cannot_align(adata):
    truth = _log2(adata)
    with pytest.raises(ValueError, match="spot\\(s\\) without a row"):
        hs.tl.add_prediction(adata, Prediction(mean=truth.iloc[:-1]), key_added="other")
    with pytest.raises(TypeError, match="prediction: expected a hinge_sc.model.Prediction"):
        hs.tl.add_prediction(adata, truth, key_added="other")
    with pytest.raises(ValueError, match="prediction.samples: expected shape"):
        hs.tl.add_prediction(adata, Prediction(mean=truth, samples=np.zeros((3, 2, 1))), key_added="other")
    assert "other" not in adata.obsm


def test_keeps_existing_keys_unless_overwrite(adata):
    truth = _log2(adata)
    hs.tl.add_prediction(adata, Prediction(mean=truth), key_added="other")
    with pytest.raises(KeyError, match="overwrite"):
        hs.tl.add_prediction(adata, Prediction(mean=truth * 0), key_added="other")
    hs.tl.add_prediction(adata, Prediction(mean=truth * 0), key_added="other", overwrite=True)
    assert float(adata.obsm["other"].to_numpy().sum()) == 0.0
    copy = hs.tl.add_prediction(adata, Prediction(mean=truth), key_added="again", copy=True)
    assert "again" in copy.obsm and "again" not in adata.obsm
