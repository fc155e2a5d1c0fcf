"""Likelihood objects: the registry, the negative binomial's density, draws and expected values, and a new likelihood
added in one place (issue 22)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._random import Noise
from hinge_sc.module import (
    LIKELIHOODS,
    Likelihood,
    NegativeBinomialLikelihood,
    build_likelihood,
    register_likelihood,
)
from hinge_sc.module._likelihood import weighted_mean
from hinge_sc.module._negative_binomial import MAX_SUPPORT, nb_log_prob


def _nb(mu: float, theta: float, n_genes: int = 1) -> tuple[NegativeBinomialLikelihood, dict]:
    lik = NegativeBinomialLikelihood(n_genes, "log2p1")
    lik.reference_library.fill_(1000.0)
    lik.log_theta.data.fill_(math.log(theta))
    return lik, {"mean": torch.full((1, n_genes), math.log2(mu), dtype=torch.float64)}


def test_registry_names_the_likelihoods():
    assert {"mse", "gaussian", "nb"} <= set(LIKELIHOODS)
    with pytest.raises(ValueError, match="`likelihood` must be one of"):
        build_likelihood("poisson-ish", 3, "log2p1")
    with pytest.raises(TypeError, match="subclass"):
        register_likelihood(dict)


def test_nb_log_prob_is_torch_negative_binomial():
    k = torch.arange(0, 60, dtype=torch.float64)
    mu, theta = torch.tensor(7.5, dtype=torch.float64), torch.tensor(2.3, dtype=torch.float64)
    reference = torch.distributions.NegativeBinomial(total_count=theta, logits=mu.log() - theta.log()).log_prob(k)
    torch.testing.assert_close(nb_log_prob(k, mu.log(), theta.log()), reference)


def test_nb_mean_scales_with_the_library_size():
    lik, out = _nb(20.0, 3.0)
    log_mu, _ = lik.log_mean(out, library=torch.tensor([2000.0], dtype=torch.float64))
    assert math.exp(float(log_mu)) == pytest.approx(40.0)  # twice the reference depth: twice the counts
    log_mu, _ = lik.log_mean(out)
    assert math.exp(float(log_mu)) == pytest.approx(20.0)


@pytest.mark.parametrize(("mu", "theta"), [(0.3, 1.0), (6.0, 2.0), (40.0, 8.0), (3000.0, 4.0)])
def test_nb_draws_have_its_mean_and_variance(mu, theta):
    """Inverse-CDF draws (exact support, or Wilson–Hilferty beyond MAX_SUPPORT) reproduce the NB moments."""
    n = 20_000
    lik, out = _nb(mu, theta)
    out = {"mean": out["mean"].expand(n, 1)}
    noise = Noise.shared(torch.Generator().manual_seed(0), n)
    values = lik.sample(out, noise).squeeze(1)  # log2(k + 1)
    k = torch.exp2(values) - 1
    assert torch.allclose(k, k.round(), atol=1e-3)  # integer counts
    variance = mu + mu * mu / theta
    assert float(k.mean()) == pytest.approx(mu, rel=0.05, abs=0.02)
    assert float(k.var()) == pytest.approx(variance, rel=0.12)
    if mu + 10 * math.sqrt(variance) > MAX_SUPPORT:  # the gamma approximation path was taken
        assert float(k.min()) >= 0


@pytest.mark.parametrize(("mu", "theta"), [(0.5, 1.0), (12.0, 3.0), (5000.0, 5.0)])
def test_nb_expected_value_matches_monte_carlo(mu, theta):
    lik, out = _nb(mu, theta)
    dist = torch.distributions.NegativeBinomial(total_count=torch.tensor(theta), logits=torch.tensor(math.log(mu / theta)))
    torch.manual_seed(0)
    k = dist.sample((200_000,))
    expected = float(torch.log2(k + 1).mean())
    assert float(lik.expected(out)) == pytest.approx(expected, abs=0.02)
    assert float(lik.point(out)) == pytest.approx(math.log2(mu + 1))


def test_nb_loss_is_the_mean_nll_of_the_weighted_counts():
    lik = NegativeBinomialLikelihood(2, "log2p1")
    lik.reference_library.fill_(100.0)
    out = {"mean": torch.tensor([[1.0, 3.0], [2.0, 0.5]])}
    counts, library = torch.tensor([[1.0, 9.0], [0.0, 2.0]]), torch.tensor([100.0, 50.0])
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, metrics = lik.loss(out, torch.zeros(2, 2), weight, counts=counts, library=library)
    mu = torch.exp2(out["mean"]) * (library / 100.0).unsqueeze(-1)
    theta = torch.exp(lik.log_theta.detach())
    ref = -torch.distributions.NegativeBinomial(total_count=theta, logits=mu.log() - theta.log()).log_prob(counts)
    assert float(loss) == pytest.approx(float(weighted_mean(ref, weight)), rel=1e-5)
    assert "nll" in metrics
    loss.backward()
    assert lik.log_theta.grad.abs().sum() > 0  # the dispersion is learned


class LaplaceLikelihood(Likelihood):
    """A toy likelihood added in this file only: Laplace(mean, b = 1) on the model scale."""

    name = "toy_laplace"
    draws = True

    def loss(self, out, x0, weight, *, counts=None, library=None):
        return weighted_mean((out["mean"] - x0).abs(), weight), {}

    def sample(self, out, noise, *, genes=None, n_genes=None, library=None):
        u = noise.rand(out["mean"].shape[1] if genes is None else n_genes) - 0.5
        u = u if genes is None else torch.gather(u, 1, genes)
        return (out["mean"] - torch.sign(u) * torch.log1p(-2 * u.abs())).clamp_min(0.0)


def test_a_likelihood_added_in_one_file_trains_and_generates():
    from tests.model.conftest import synthetic_adata

    register_likelihood(LaplaceLikelihood)
    adata = synthetic_adata(n_spots=40)
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    backbone = hs.Backbone.random(list(adata.var_names), d_model=16, n_layers=1, n_heads=2, seed=0)
    model = hs.HINGE(adata, backbone, likelihood="toy_laplace", diffusion_steps=5)
    model.train(max_epochs=1, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    out = model.generate(n_samples=3, seed=0, return_samples=True, show_progress_bar=False)
    assert np.isfinite(out.samples).all() and out.std.to_numpy().mean() > 0  # draws from the toy likelihood
    assert model.module.resolve_reveal(None) == "sample"
