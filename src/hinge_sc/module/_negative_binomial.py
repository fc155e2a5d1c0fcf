r"""A negative-binomial likelihood on raw counts (beyond the paper), as scVI models counts.

The denoiser's mean output :math:`m` of a gene is read as the log of its expected count at the reference depth
:math:`\ell_0` (the median library size of the training spots), and the spot's library size :math:`\ell` scales it:

.. math::

    \mu = \frac{\ell}{\ell_0}\,2^{m} \;(\texttt{log2p1}), \qquad
    \mu = \frac{\ell}{10^4}\,e^{m} \;(\texttt{log1p\_cp10k}), \qquad
    k \sim \mathrm{NB}(\mu, \theta_g)

with one inverse dispersion :math:`\theta_g` per gene (scVI's ``dispersion="gene"``). Training minimises
:math:`-\log \mathrm{NB}(k \mid \mu, \theta)` of the measured counts over the revealed genes. A reveal step draws a
count and writes its model-scale value (:math:`\log_2(k+1)`, or :math:`\log(1 + 10^4 k/\ell)`), so the reverse
process stays in expression space and the samples are counts.

Draws use the inverse CDF of the count distribution, from one uniform number per gene: exactly, on the support
:math:`0 \ldots K-1` with :math:`K` covering the mean plus 10 s.d. (at most :data:`MAX_SUPPORT`); for genes whose
mean needs a larger support, the gamma rate of the gamma–Poisson mixture by the Wilson–Hilferty approximation
(the Poisson noise is then negligible beside it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._likelihood import Likelihood, gather_genes, register_likelihood, weighted_mean

#: Largest count support evaluated exactly per entry (beyond: Wilson–Hilferty gamma quantiles).
MAX_SUPPORT = 1024
#: Gauss–Hermite nodes for the expected value of entries beyond the exact support.
N_QUADRATURE = 16
#: Bounds of :math:`\log\mu` (counts between 2e-9 and 3e6).
LOG_MU_RANGE = (-20.0, 15.0)


def nb_log_prob(k: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathrm{NB}(k \mid \mu, \theta) = \log\Gamma(k+\theta) - \log\Gamma(\theta) - \log\Gamma(k+1)
    + \theta\log\frac{\theta}{\theta+\mu} + k\log\frac{\mu}{\theta+\mu}` (broadcasting)."""
    theta = torch.exp(log_theta)
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    return (
        torch.lgamma(k + theta) - torch.lgamma(theta) - torch.lgamma(k + 1.0)
        + theta * (log_theta - log_theta_mu) + k * (log_mu - log_theta_mu)
    )  # fmt: skip


def wilson_hilferty_rate(mu: torch.Tensor, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    r"""Gamma(:math:`\theta`, mean :math:`\mu`) quantile at standard-normal ``z``:
    :math:`\mu\,\big(1 - \tfrac{1}{9\theta} + z\sqrt{\tfrac{1}{9\theta}}\big)^3`, floored at 0."""
    c = 1.0 / (9.0 * theta)
    return mu * (1.0 - c + z * c.sqrt()).clamp_min(0.0) ** 3


class NegativeBinomialLikelihood(Likelihood):
    """Negative binomial on raw counts with the spot's library size (see the module docstring).

    Parameters
    ----------
    n_genes, target_scale
        See :class:`~hinge_sc.module.Likelihood`.
    """

    name = "nb"
    draws = True
    uses_counts = True

    def __init__(self, n_genes: int, target_scale: str = "log2p1"):
        super().__init__(n_genes, target_scale)
        self.log_theta = nn.Parameter(torch.ones(self.n_genes))  # θ ≈ 2.7 at the start
        self.register_buffer("reference_library", torch.tensor(1e4))

    # ------------------------------------------------------------------ parameters
    def start_training(self, library: torch.Tensor) -> None:
        """Set the reference depth :math:`\\ell_0` to the median library size of the training spots."""
        library = library[library > 0]
        if library.numel():
            self.reference_library.fill_(float(library.float().median()))

    def log_mean(self, out, *, genes: torch.Tensor | None = None, library: torch.Tensor | None = None):
        r"""``(n, r)`` :math:`\log\mu` of the counts, and ``(n, r)`` :math:`\log\theta`, at ``genes``."""
        m = out["mean"]
        depth = self.reference_library if library is None else library.to(m.dtype).clamp_min(1.0).unsqueeze(-1)
        if self.target_scale == "log2p1":
            log_mu = m * math.log(2.0) + torch.log(depth / self.reference_library)
        else:
            log_mu = m + torch.log(depth / 1e4)
        log_theta = gather_genes(self.log_theta.expand(m.shape[0], -1), genes) if genes is not None else self.log_theta
        return log_mu.clamp(*LOG_MU_RANGE), log_theta.expand_as(m)

    def to_model_scale(self, k: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """Counts → the model scale (``library``: ``(n,)``, default the reference depth)."""
        if self.target_scale == "log2p1":
            return torch.log2(k + 1.0)
        depth = self.reference_library if library is None else library.to(k.dtype).clamp_min(1.0).unsqueeze(-1)
        return torch.log1p(1e4 * k / depth)

    # ------------------------------------------------------------------ the likelihood's interface
    def loss(self, out, x0, weight, *, counts=None, library=None):
        """Negative-binomial NLL of the measured counts over the weighted entries."""
        if counts is None or library is None:
            raise ValueError("The 'nb' likelihood needs the raw counts and library sizes of the batch.")
        log_mu, log_theta = self.log_mean(out, library=library)
        nll = weighted_mean(-nb_log_prob(counts.to(log_mu.dtype), log_mu, log_theta), weight)
        return nll, {"nll": nll.detach()}

    def point(self, out, *, genes=None, library=None):
        """The model-scale value of the expected count, e.g. :math:`\\log_2(\\mu + 1)`."""
        log_mu, _ = self.log_mean(out, genes=genes, library=library)
        return self.to_model_scale(torch.exp(log_mu), library)

    def _support(self, log_mu: torch.Tensor, log_theta: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Entries whose mean + 10 s.d. fits the exact support, and its length ``K``."""
        mu, theta = torch.exp(log_mu), torch.exp(log_theta)
        reach = mu + 10.0 * torch.sqrt(mu + mu * mu / theta) + 10.0
        exact = reach <= MAX_SUPPORT
        k_max = int(reach[exact].max().ceil()) if exact.any() else 1
        return exact, max(k_max, 2)

    def _probabilities(self, log_mu, log_theta, k_max: int) -> torch.Tensor:
        """``(n, r, K)`` probabilities of counts ``0 … K-1`` (renormalised on the support)."""
        k = torch.arange(k_max, device=log_mu.device, dtype=log_mu.dtype)
        return torch.softmax(nb_log_prob(k, log_mu.unsqueeze(-1), log_theta.unsqueeze(-1)), dim=-1)

    def sample(self, out, noise, *, genes=None, n_genes=None, library=None):
        """A count per entry by the inverse CDF of one uniform draw per gene, written on the model scale."""
        u = gather_genes(noise.rand(out["mean"].shape[1] if genes is None else n_genes), genes)
        log_mu, log_theta = self.log_mean(out, genes=genes, library=library)
        exact, k_max = self._support(log_mu, log_theta)
        cdf = self._probabilities(log_mu, log_theta, k_max).cumsum(-1)
        k = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype).contiguous()).squeeze(-1).clamp_max(k_max - 1)
        k = k.to(log_mu.dtype)
        if not exact.all():  # large means: the gamma rate of the mixture (Poisson noise negligible beside it)
            z = torch.special.ndtri(u.to(log_mu.dtype).clamp(1e-7, 1 - 1e-7))
            rate = wilson_hilferty_rate(torch.exp(log_mu), torch.exp(log_theta), z)
            k = torch.where(exact, k, rate.round())
        return self.to_model_scale(k, library)

    def expected(self, out, *, genes=None, library=None):
        """:math:`E[f(k)]` of the model-scale value ``f`` of a draw (exact sum, or Gauss–Hermite beyond)."""
        log_mu, log_theta = self.log_mean(out, genes=genes, library=library)
        exact, k_max = self._support(log_mu, log_theta)
        k = torch.arange(k_max, device=log_mu.device, dtype=log_mu.dtype)
        values = self.to_model_scale(k.view(1, 1, -1).expand(*log_mu.shape, -1),
                                     None if library is None else library.unsqueeze(-1))  # fmt: skip
        mean = (self._probabilities(log_mu, log_theta, k_max) * values).sum(-1)
        if not exact.all():
            nodes, weights = (torch.tensor(v, dtype=log_mu.dtype, device=log_mu.device) for v in _hermite(N_QUADRATURE))
            rate = wilson_hilferty_rate(torch.exp(log_mu).unsqueeze(-1), torch.exp(log_theta).unsqueeze(-1), nodes)
            lib = None if library is None else library.unsqueeze(-1)
            approx = (self.to_model_scale(rate, lib) * weights).sum(-1)
            mean = torch.where(exact, mean, approx)
        return mean

    def log_prob(self, counts: torch.Tensor, out, *, library: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, G)`` log-probabilities of raw ``counts`` under the predicted distribution."""
        log_mu, log_theta = self.log_mean(out, library=library)
        return nb_log_prob(counts.to(log_mu.dtype), log_mu, log_theta)


def _hermite(n: int) -> tuple[list[float], list[float]]:
    """Nodes and weights of Gauss–Hermite quadrature for a standard normal (probabilists', weights sum to 1)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes.tolist(), (weights / weights.sum()).tolist()


register_likelihood(NegativeBinomialLikelihood)
