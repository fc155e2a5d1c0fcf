from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import hinge_sc as hs

N_SPOTS, N_GENES, N_FEATURES, N_VIEWS = 96, 24, 10, 3


def synthetic_adata(seed: int = 0, n_spots: int = N_SPOTS) -> ad.AnnData:
    """Tiny AnnData whose counts depend on its image features (for mechanics, not biology)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_spots, N_FEATURES)).astype(np.float32)
    weights = np.random.default_rng(123).normal(size=(N_FEATURES, N_GENES))
    counts = rng.poisson(np.exp(1.0 + 0.6 * feats @ weights / np.sqrt(N_FEATURES))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"GENE{i}" for i in range(N_GENES)]
    adata.obs_names = [f"spot{i}" for i in range(n_spots)]
    adata.obs["section"] = np.where(np.arange(n_spots) < n_spots // 2, "S1", "S2")
    adata.obsm["X_histology"] = feats
    views = feats[:, None, :] + 0.05 * rng.normal(size=(n_spots, N_VIEWS, N_FEATURES))
    views[:, 0] = feats
    adata.obsm["X_histology_views"] = views.astype(np.float32)
    return adata


@pytest.fixture
def adata():
    return synthetic_adata()


@pytest.fixture(scope="session")
def backbone():
    return hs.Backbone.random([f"GENE{i}" for i in range(N_GENES)] + ["EXTRA"], d_model=32, n_layers=2, n_heads=4)


@pytest.fixture
def trained(backbone):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata, features_key="X_histology", views_key="X_histology_views", section_key="section")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    model.train(max_epochs=3, batch_size=32, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    return model
