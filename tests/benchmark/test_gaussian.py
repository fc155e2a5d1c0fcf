"""HINGE with Gaussian instead of masked diffusion (the paper's key ablation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._constants import MODULE_KEYS
from hinge_sc.module._gaussian import GaussianHINGEModule, cosine_alpha_bar

from ..model.conftest import synthetic_adata

GENES = [f"G{i}" for i in range(30)]


@pytest.fixture(scope="module")
def module():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=2, n_heads=4, seed=0)
    ids, _ = bb.token_ids(GENES[:20])
    return GaussianHINGEModule(bb, ids, n_features=6, diffusion_steps=10, likelihood="mse", readout=False)


def test_cosine_schedule():
    abar = cosine_alpha_bar(50)
    assert abar.shape == (51,) and abar[0] == 1.0
    assert np.all(np.diff(abar) < 0) and 0 <= abar[-1] < 1e-3
    with pytest.raises(ValueError, match="`n_steps` must be ≥ 1"):
        cosine_alpha_bar(0)


def test_loss_over_all_genes_and_visible_everywhere(module):
    module.train()
    batch = {
        MODULE_KEYS.COUNTS: torch.poisson(torch.full((8, 20), 3.0)),
        MODULE_KEYS.LIBRARY: torch.full((8,), 1000.0),
        MODULE_KEYS.FEATURES: torch.randn(8, 6),
    }
    inference, generative, loss = module(batch)
    assert torch.all(inference[MODULE_KEYS.VISIBLE] == 1)
    assert inference[MODULE_KEYS.X_T].shape == (8, 20) and torch.isfinite(loss.loss)
    expected = ((generative[MODULE_KEYS.PREDICTION] - inference[MODULE_KEYS.TARGET]) ** 2).mean()
    assert loss.loss.item() == pytest.approx(expected.item())


def test_sampler_shape_and_seed(module):
    module.eval()
    module.set_target_stats(torch.full((20,), 2.0), torch.full((20,), 0.5))
    feats = torch.randn(3, 6)
    a = module.sample(feats, 4, 5, torch.Generator().manual_seed(0))
    b = module.sample(feats, 4, 5, torch.Generator().manual_seed(0))
    c = module.sample(feats, 4, 5, torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 20) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"`mean` and `std` must have shape \(20,\)"):
        module.set_target_stats(torch.zeros(3), torch.ones(3))


def test_model_trains_generates_and_reloads(tmp_path):
    adata = synthetic_adata()
    backbone = hs.Backbone.random([f"GENE{i}" for i in range(24)], d_model=32, n_layers=2, n_heads=4)
    hs.benchmark.HINGEGaussian.setup_anndata(adata, features_key="X_histology", views_key="X_histology_views")
    model = hs.benchmark.HINGEGaussian(adata, backbone, diffusion_steps=10)
    model.train(max_epochs=2, batch_size=32, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    x0 = np.log2(adata.X.toarray() + 1)
    np.testing.assert_allclose(model.module.gene_mean.numpy(), x0.mean(0), rtol=1e-4)
    hs.tl.generate(model, adata, n_samples=2, n_steps=4, seed=0, key_added="gauss", show_progress_bar=False)
    assert adata.obsm["gauss"].shape == (adata.n_obs, 24) and np.isfinite(adata.obsm["gauss"].to_numpy()).all()
    model.save(tmp_path / "m")
    loaded = hs.benchmark.HINGEGaussian.load(tmp_path / "m")
    assert isinstance(loaded.module, GaussianHINGEModule)
    np.testing.assert_allclose(loaded.module.gene_std.numpy(), model.module.gene_std.numpy())
    again = loaded.generate(adata, n_samples=2, n_steps=4, seed=0, show_progress_bar=False)
    np.testing.assert_allclose(again.mean.to_numpy(), adata.obsm["gauss"].to_numpy(), rtol=1e-5, atol=1e-5)
