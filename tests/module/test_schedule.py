from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hinge_sc.module import hidden_schedule, permutation_ranks, poly_auto_exponent, visibility, warm_start_cap


def test_worked_example_g200_t50():
    # docs/method.md §5.1 worked example
    assert poly_auto_exponent(200, 50) == pytest.approx(1.35437, abs=1e-5)
    k = hidden_schedule(200, 50)
    assert k.shape == (51,)
    assert list(k[:11]) == [0, 5, 10, 16, 21, 26, 31, 36, 42, 47, 52]
    assert list(k[-5:]) == [193, 195, 197, 199, 200]
    assert warm_start_cap(k, 200, 0.2) == 7


@pytest.mark.parametrize("schedule", ["poly_auto", "linear", "cosine", "sqrt", "power"])
@pytest.mark.parametrize(("n_genes", "n_steps"), [(200, 50), (20, 50), (2000, 50), (1, 10), (57, 13)])
def test_counts_pinned_and_monotone(schedule, n_genes, n_steps):
    k = hidden_schedule(n_genes, n_steps, schedule, power=2.0 if schedule == "power" else None)
    assert k[0] == 0 and k[-1] == n_genes
    assert np.all(np.diff(k) >= 0)


@pytest.mark.parametrize(("n_genes", "n_steps"), [(200, 50), (785, 50), (1000, 100), (61, 50), (3000, 20)])
def test_poly_auto_leaves_one_gene_visible_at_t_minus_1(n_genes, n_steps):
    zeta = math.log(n_genes) / math.log(n_steps)
    if not 1.05 <= zeta <= 4:
        pytest.skip("clamp active: the one-visible-gene property does not apply")
    assert hidden_schedule(n_genes, n_steps)[n_steps - 1] == n_genes - 1


def test_clamped_schedule_has_steps_that_reveal_nothing():
    k = hidden_schedule(20, 50)
    assert poly_auto_exponent(20, 50) == 1.05
    assert (np.diff(k) == 0).any()


def test_power_schedule_needs_power():
    with pytest.raises(ValueError, match="power"):
        hidden_schedule(10, 5, "power")


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule"):
        hidden_schedule(10, 5, "quadratic")


def test_masks_are_nested_and_exact_count():
    g, t_steps = 200, 50
    k = torch.as_tensor(hidden_schedule(g, t_steps))
    ranks = permutation_ranks(16, g, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ranks.sort(dim=1).values, torch.arange(g).expand(16, g))
    prev = None
    for t in range(t_steps + 1):
        m = visibility(ranks, k[t].expand(16))
        assert torch.all((1 - m).sum(1) == k[t])  # exact count hidden
        if prev is not None:
            assert torch.all(m <= prev)  # visible(t) ⊆ visible(t-1)
        prev = m


def test_permutations_are_seeded():
    a = permutation_ranks(4, 30, generator=torch.Generator().manual_seed(1))
    b = permutation_ranks(4, 30, generator=torch.Generator().manual_seed(1))
    c = permutation_ranks(4, 30, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
