"""A seed fully determines a model and its samples; hinge_sc never reseeds the caller's RNGs (issue 9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hinge_sc as hs

from .conftest import synthetic_adata


def _model(backbone, seed=0):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata, features_key="X_histology", views_key="X_histology_views")
    return hs.HINGE(adata, backbone, diffusion_steps=10, seed=seed)


def _train(model, seed=0):
    model.train(max_epochs=2, batch_size=32, warmup_epochs=1, accelerator="cpu", seed=seed, show_progress_bar=False)


def _states_equal(a, b):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_two_models_with_one_seed_are_identical(backbone):
    torch.manual_seed(123)
    a = _model(backbone)
    torch.rand(1000)  # the global RNG moves on between the two models
    b = _model(backbone)
    assert _states_equal(a, b)
    assert not _states_equal(a, _model(backbone, seed=1))
    _train(a)
    torch.rand(1000)
    _train(b)
    assert _states_equal(a, b)
    ga = a.generate(n_samples=2, n_steps=4, seed=3, show_progress_bar=False)
    gb = b.generate(n_samples=2, n_steps=4, seed=3, show_progress_bar=False)
    pd.testing.assert_frame_equal(ga.mean, gb.mean)


def test_global_rng_is_left_alone(backbone):
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    model = _model(backbone)
    _train(model)
    model.generate(n_samples=2, n_steps=3, seed=0, show_progress_bar=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)


@pytest.fixture(scope="module")
def trained_model():
    bb = hs.Backbone.random([f"GENE{i}" for i in range(24)], d_model=32, n_layers=2, n_heads=4)
    model = _model(bb)
    _train(model)
    return model


def test_generation_does_not_depend_on_batch_size(trained_model):
    adata = synthetic_adata(n_spots=150)
    small = trained_model.generate(adata, n_samples=3, n_steps=5, seed=4, batch_size=16, return_samples=True,
                                   show_progress_bar=False)  # fmt: skip
    large = trained_model.generate(adata, n_samples=3, n_steps=5, seed=4, batch_size=128, return_samples=True,
                                   show_progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(small.samples, large.samples, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(small.mean, large.mean, atol=1e-5)


def test_a_spot_does_not_depend_on_the_other_spots(trained_model):
    adata = synthetic_adata(n_spots=40)
    whole = trained_model.generate(adata, n_samples=2, n_steps=5, seed=9, show_progress_bar=False).mean
    part = adata[[5, 30, 2]].copy()
    alone = trained_model.generate(part, n_samples=2, n_steps=5, seed=9, show_progress_bar=False).mean
    pd.testing.assert_frame_equal(alone, whole.loc[alone.index], atol=1e-5)
    other_seed = trained_model.generate(part, n_samples=2, n_steps=5, seed=10, show_progress_bar=False).mean
    assert not np.allclose(other_seed.to_numpy(), alone.to_numpy())


def test_overwrite_removes_stale_samples(trained_model):
    adata = synthetic_adata(n_spots=20)
    hs.tl.generate(trained_model, adata, n_samples=2, n_steps=3, seed=0, save_samples=True, show_progress_bar=False)
    assert adata.obsm["hinge_samples"].shape == (20, 2, 24)
    with pytest.raises(KeyError, match=r"`adata.obsm\['hinge'\]` already exists"):
        hs.tl.generate(trained_model, adata, n_samples=3, seed=1, show_progress_bar=False)
    hs.tl.generate(trained_model, adata, n_samples=3, n_steps=3, seed=1, overwrite=True, show_progress_bar=False)
    assert "hinge_samples" not in adata.obsm  # the earlier run's samples do not sit beside the new mean
    assert adata.uns["hinge"]["params"]["seed"] == 1


def test_leftover_companion_key_blocks_without_overwrite(trained_model):
    adata = synthetic_adata(n_spots=10)
    adata.obsm["hinge_samples"] = np.zeros((10, 1, 24))
    with pytest.raises(KeyError, match=r"hinge_samples.*already exists"):
        hs.tl.generate(trained_model, adata, n_samples=1, n_steps=2, seed=0, show_progress_bar=False)
