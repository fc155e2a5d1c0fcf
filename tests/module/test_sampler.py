from __future__ import annotations

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._random import Noise
from hinge_sc.module import HINGEModule, hidden_schedule, reverse_step_grid, sample_masked

GENES = [f"G{i}" for i in range(40)]


@pytest.fixture(scope="module")
def module():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=2, n_heads=4, seed=0)
    ids, _ = bb.token_ids(GENES[:25])
    return HINGEModule(bb, ids, n_features=6, n_steps=10).eval()


def test_grid():
    assert list(reverse_step_grid(50)) == list(range(50, -1, -1))
    assert list(reverse_step_grid(50, 5)) == [50, 40, 30, 20, 10, 0]
    with pytest.raises(ValueError, match="n_steps"):
        reverse_step_grid(50, 51)


@pytest.mark.parametrize(("n_genes", "n_steps", "grid_steps"), [(25, 10, None), (25, 10, 4), (20, 50, None)])
def test_revealed_genes_never_change(n_genes, n_steps, grid_steps):
    counts = torch.as_tensor(hidden_schedule(n_genes, n_steps))
    grid = reverse_step_grid(n_steps, grid_steps)
    calls = []

    def denoise(x_t, visible, t, visible_prev):
        # visible genes in the input keep the value written when they were revealed
        if calls:
            assert torch.all((x_t * visible) == (calls[-1][1] * visible))
        step_value = float(len(calls) + 1)
        calls.append((visible.clone(), None))
        return torch.full_like(x_t, step_value)

    def fill(x, visible, noise):
        out = x * visible + 1000.0 * (1 - visible)
        if calls:
            calls[-1] = (calls[-1][0], x.clone())
        return out

    noise = Noise.shared(torch.Generator().manual_seed(0), 3)
    x = sample_masked(denoise, fill, counts, n_genes, grid=grid, noise=noise)
    assert torch.all(x > 0) and torch.all(x <= len(calls))  # every gene set, by exactly one step
    # each step wrote the genes it revealed: per sample, the number of genes carrying value j is the reveal count
    revealed_per_call = [int(counts[t]) - int(counts[s]) for t, s in zip(grid[:-1], grid[1:]) if counts[t] != counts[s]]
    for j, n_rev in enumerate(revealed_per_call, start=1):
        assert torch.all((x == j).sum(1) == n_rev)


def test_sample_seeded(module):
    feats = torch.randn(4, 6)
    a = module.sample(feats, 3, generator=torch.Generator().manual_seed(0))
    b = module.sample(feats, 3, generator=torch.Generator().manual_seed(0))
    c = module.sample(feats, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 25)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_fewer_steps_still_sets_every_gene(module):
    out = module.sample(torch.randn(2, 6), 2, n_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 25) and torch.isfinite(out).all()
    assert np.all(out.numpy() != 0)
