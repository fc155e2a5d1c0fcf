"""scvi-tools style getters: ``get_expression`` / ``get_normalized_expression`` return values and write nothing."""

from __future__ import annotations

import numpy as np
import pytest


def test_get_expression_returns_and_does_not_write(trained):
    adata = trained.adata
    before = (set(adata.obsm), set(adata.uns), set(adata.layers))
    mean = trained.get_expression(n_samples=3, seed=0)
    assert (set(adata.obsm), set(adata.uns), set(adata.layers)) == before
    assert list(mean.columns) == trained.panel_genes_
    assert list(mean.index) == list(adata.obs_names)
    assert mean.to_numpy().min() >= 0.0  # clipped at the scale's floor by default

    genes = [trained.panel_genes_[3], trained.panel_genes_[0]]
    sub, std, samples = trained.get_expression(
        indices=[0, 5, 7], gene_list=genes, n_samples=3, seed=0, return_std=True, return_samples=True
    )
    assert list(sub.columns) == genes and list(sub.index) == list(adata.obs_names[[0, 5, 7]])
    # per-spot random streams: a subset gets the same values as the whole
    np.testing.assert_allclose(sub.to_numpy(), mean.loc[sub.index, genes].to_numpy(), rtol=1e-5, atol=1e-6)
    assert std.shape == (3, 2) and samples.shape == (3, 3, 2)
    # the default mean is Rao–Blackwellised (expected values at each reveal); "samples" averages the draws
    assert not np.allclose(samples.mean(1), sub.to_numpy(), rtol=1e-5, atol=1e-6)
    drawn = trained.get_expression(indices=[0, 5, 7], gene_list=genes, n_samples=3, seed=0, mean_estimate="samples")
    np.testing.assert_allclose(samples.mean(1), drawn.to_numpy(), rtol=1e-5, atol=1e-6)
    raw = trained.get_expression(n_samples=3, seed=0, clip=False, mean_estimate="samples")
    clipped = trained.get_expression(n_samples=3, seed=0, mean_estimate="samples")
    assert (raw.to_numpy() <= clipped.to_numpy() + 1e-6).all()
    with pytest.raises(KeyError, match="gene_list"):
        trained.get_expression(gene_list=["NOT_A_GENE"], n_samples=1)


def test_get_normalized_expression_scvi_meaning(trained):
    norm = trained.get_normalized_expression(n_samples=3, seed=0)
    np.testing.assert_allclose(norm.sum(axis=1), 1e4, rtol=1e-4)  # every spot rescaled to library_size
    freq = trained.get_normalized_expression(n_samples=3, seed=0, library_size=1)
    np.testing.assert_allclose(freq.to_numpy() * 1e4, norm.to_numpy(), rtol=1e-4, atol=1e-3)
    _, _, samples = trained.get_expression(n_samples=3, seed=0, return_std=True, return_samples=True)
    counts = np.exp2(samples.astype(np.float64)) - 1  # log2(count + 1) back to counts
    expected = (counts / counts.sum(-1, keepdims=True) * 1e4).mean(1)
    np.testing.assert_allclose(norm.to_numpy(), expected, rtol=1e-3)
    every = trained.get_normalized_expression(n_samples=3, seed=0, return_mean=False)
    assert every.shape == (3, trained.adata.n_obs, len(trained.panel_genes_))  # samples first, as scvi-tools
    sub = trained.get_normalized_expression(n_samples=3, seed=0, gene_list=trained.panel_genes_[:2])
    np.testing.assert_allclose(sub.to_numpy(), norm.iloc[:, :2].to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="library_size"):
        trained.get_normalized_expression(library_size="latent")
