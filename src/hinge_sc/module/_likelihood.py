r"""Likelihoods: what the denoiser predicts for a revealed gene, how that is scored, and how a reveal step draws it.

A likelihood object defines, for the genes a reverse step reveals (docs/method.md §5):

- the **output heads** the denoiser needs besides its mean (:attr:`Likelihood.heads`, e.g. a log-variance);
- the **loss** of a training step on the revealed entries (:meth:`Likelihood.loss`), as scvi-tools takes
  ``-log_prob`` of the distribution its ``generative`` builds;
- the **value a reveal writes**: the point value (:meth:`Likelihood.point`, ``reveal="mean"``) or a draw
  (:meth:`Likelihood.sample`, ``reveal="sample"``), on the model scale, so the reverse process continues in
  expression space;
- the **expected value** of that write (:meth:`Likelihood.expected`), which the Rao–Blackwellised mean averages;
- optionally a **calibration** on held-out spots (:meth:`Likelihood.calibrate`).

The denoiser's outputs reach a likelihood as a dict of ``(n, r)`` tensors: ``"mean"`` (always) and one entry per
head. Likelihoods are registered by name in :data:`LIKELIHOODS` (:func:`register_likelihood`); ``HINGE(...,
likelihood=name)`` builds one. Adding a likelihood means writing its class and registering it: nothing else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hinge_sc._random import Noise

#: Denoiser outputs handed to a likelihood: ``"mean"`` and the likelihood's heads, each ``(n, r)``.
Outputs = dict[str, torch.Tensor]


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries of ``weight`` (0/1, same shape); 0 when no entry is weighted."""
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def gather_genes(values: torch.Tensor, genes: torch.Tensor | None) -> torch.Tensor:
    """``(n, G)`` per-gene values at ``genes (n, r)`` (columns of the panel); ``values`` itself for ``None``."""
    return values if genes is None else torch.gather(values, 1, genes)


class Likelihood(nn.Module):
    """Base of the likelihoods of a revealed gene's value (see the module docstring).

    Parameters
    ----------
    n_genes
        Panel size ``G`` (per-gene parameters such as a dispersion have this length).
    target_scale
        Model scale of the diffusion, ``"log2p1"`` or ``"log1p_cp10k"``.
    """

    #: Registry name.
    name: ClassVar[str] = ""
    #: Output heads the denoiser builds besides the mean (names of :data:`hinge_sc.nn.HEADS`).
    heads: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`sample` draws (``reveal="sample"``); the default reveal of a likelihood that draws is
    #: ``"sample"``, else ``"mean"``.
    draws: ClassVar[bool] = False
    #: Whether the loss reads the raw counts and library sizes (a count likelihood) besides the model-scale target.
    uses_counts: ClassVar[bool] = False

    def __init__(self, n_genes: int, target_scale: str = "log2p1"):
        super().__init__()
        self.n_genes, self.target_scale = int(n_genes), target_scale

    def loss(
        self,
        out: Outputs,
        x0: torch.Tensor,
        weight: torch.Tensor,
        *,
        counts: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss over the weighted entries, and 0-d metrics to log.

        Parameters
        ----------
        out
            Denoiser outputs, ``(B, G)`` each.
        x0
            ``(B, G)`` model-scale targets.
        weight
            ``(B, G)`` 0/1 weights of the entries in the loss (the revealed genes).
        counts, library
            ``(B, G)`` raw counts and ``(B,)`` library sizes (read by count likelihoods).
        """
        raise NotImplementedError

    def point(
        self, out: Outputs, *, genes: torch.Tensor | None = None, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model-scale value a reveal writes with ``reveal="mean"``: the predicted mean (``genes``, ``library``: as
        :meth:`sample`)."""
        return out["mean"]

    def sample(
        self,
        out: Outputs,
        noise: Noise,
        *,
        genes: torch.Tensor | None = None,
        n_genes: int | None = None,
        library: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model-scale values drawn for the revealed genes (``reveal="sample"``).

        Parameters
        ----------
        out
            Denoiser outputs at the revealed genes, ``(n, r)`` each.
        noise
            Random streams of the rows; a likelihood draws one full ``(n, n_genes)`` block per call and uses its
            entries at ``genes``, so the values do not depend on how the genes are ordered or pruned.
        genes, n_genes
            Panel columns ``(n, r)`` of the entries of ``out`` (``None``: all ``G`` genes, in order).
        library
            ``(n,)`` library sizes (count likelihoods; ``None``: the reference depth).
        """
        raise ValueError(
            f"The {self.name!r} likelihood predicts one value per gene and cannot draw one: use `reveal='mean'`, or "
            "a likelihood that draws (e.g. `likelihood='gaussian'` or `'nb'`)."
        )

    def expected(
        self, out: Outputs, *, genes: torch.Tensor | None = None, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Expected model-scale value of a :meth:`sample` draw (what the Rao–Blackwellised mean averages)."""
        return self.point(out, genes=genes, library=library)

    def calibrate(self, outputs: list[tuple[Outputs, torch.Tensor, torch.Tensor]]) -> float | None:
        """Fit a calibration on held-out ``(outputs, x0, weight)`` triples; ``None``: nothing to calibrate."""
        return None

    def start_training(self, library: torch.Tensor) -> None:
        """Called once before training with the ``(n,)`` library sizes of the training spots (nothing by default)."""


class PointLikelihood(Likelihood):
    r"""The paper's objective: one value per gene, the squared error over the revealed genes,
    :math:`\mathcal L = \sum d\,(\hat x_0 - x_0)^2 / \sum d`."""

    name = "mse"

    def loss(self, out, x0, weight, *, counts=None, library=None):
        """Masked squared error."""
        mse = weighted_mean((out["mean"] - x0) ** 2, weight)
        return mse, {}


def rectified_mean(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    r"""Mean of :math:`\max(0, X)` for :math:`X \sim \mathcal N(\mu, \sigma^2)`: :math:`\mu\,\Phi(\mu/\sigma) +
    \sigma\,\varphi(\mu/\sigma)` (docs/method.md §5.5): the expected value of a Gaussian draw clipped at 0, the floor
    of both expression scales."""
    sd = torch.exp(0.5 * log_var)
    z = mean / sd
    normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype), torch.ones((), dtype=mean.dtype))
    return mean * normal.cdf(z) + sd * torch.exp(normal.log_prob(z))


class GaussianLikelihood(Likelihood):
    r"""A mean and a variance per revealed gene (beyond the paper; docs/method.md §5.5).

    The loss is the squared error of the mean plus the Gaussian negative log-likelihood of its detached residual,
    so the mean is trained exactly as with :class:`PointLikelihood`:

    .. math::

        \mathcal L = \frac{\sum d\,(\hat x_0 - x_0)^2}{\sum d}
        + \frac{\sum d\,\tfrac12\big(\log\sigma^2 + \mathrm{sg}(\hat x_0 - x_0)^2 / \sigma^2\big)}{\sum d}

    Draws are :math:`\max(0, \hat x_0 + \tau\sigma\epsilon)`, with the variance scale :math:`\tau^2` fitted on
    held-out spots by :meth:`calibrate` (buffer ``log_variance_offset`` = :math:`\log\tau^2`).
    """

    name = "gaussian"
    heads = ("log_variance",)
    draws = True

    def __init__(self, n_genes: int, target_scale: str = "log2p1"):
        super().__init__(n_genes, target_scale)
        self.register_buffer("log_variance_offset", torch.zeros(()))

    def log_variance(self, out: Outputs) -> torch.Tensor:
        """The calibrated log-variance :math:`\\log\\tau^2 + \\log\\sigma^2`."""
        return out["log_variance"] + self.log_variance_offset

    def loss(self, out, x0, weight, *, counts=None, library=None):
        """Squared error plus the Gaussian NLL of the detached residual."""
        sq_err = (out["mean"] - x0) ** 2
        mse = weighted_mean(sq_err, weight)
        log_var = out["log_variance"]
        nll = weighted_mean(0.5 * (log_var + sq_err.detach() * torch.exp(-log_var)), weight)
        return mse + nll, {"mse": mse.detach(), "nll": nll.detach()}

    def sample(self, out, noise, *, genes=None, n_genes=None, library=None):
        """:math:`\\max(0, \\mu + e^{\\frac12 \\log\\sigma^2}\\epsilon)`, one ``(n, G)`` normal draw per call."""
        eps = gather_genes(noise.randn(out["mean"].shape[1] if genes is None else n_genes), genes)
        return (out["mean"] + torch.exp(0.5 * self.log_variance(out)) * eps).clamp_min(0.0)

    def expected(self, out, *, genes=None, library=None):
        """Mean of the clipped Gaussian (:func:`rectified_mean`)."""
        return rectified_mean(out["mean"], self.log_variance(out))

    def calibrate(self, outputs):
        r""":math:`\tau^2 = \sum d\,(x_0 - \hat x_0)^2/\sigma^2 \,/\, \sum d` on held-out entries (the scale that
        maximises their Gaussian likelihood), stored as ``log_variance_offset``; returns :math:`\tau^2`."""
        num = den = 0.0
        for out, x0, weight in outputs:
            z2 = (out["mean"] - x0) ** 2 * torch.exp(-out["log_variance"])
            num += float((z2 * weight).sum())
            den += float(weight.sum())
        tau2 = num / den if den > 0 else 1.0
        self.log_variance_offset.fill_(math.log(tau2) if tau2 > 0 else 0.0)
        return tau2


#: Likelihoods by name (``HINGE(likelihood=name)``).
LIKELIHOODS: dict[str, type[Likelihood]] = {}


def register_likelihood(cls: type[Likelihood]) -> type[Likelihood]:
    """Register a :class:`Likelihood` subclass under ``cls.name`` (usable as a class decorator).

    Raises
    ------
    TypeError
        ``cls`` is not a :class:`Likelihood` subclass.
    ValueError
        It has no ``name``, or another class is registered under it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise TypeError(f"A likelihood must be a subclass of hinge_sc.module.Likelihood, got {cls!r}.")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`; set the class attribute `name = '...'`.")
    if LIKELIHOODS.get(cls.name, cls) is not cls:
        raise ValueError(f"A likelihood is already registered as {cls.name!r} ({LIKELIHOODS[cls.name].__name__}).")
    LIKELIHOODS[cls.name] = cls
    return cls


def build_likelihood(name: str, n_genes: int, target_scale: str) -> Likelihood:
    """The registered likelihood ``name`` for ``n_genes`` genes on ``target_scale``.

    Raises
    ------
    ValueError
        No likelihood of that name (the registered ones are named).
    """
    if name not in LIKELIHOODS:
        raise ValueError(
            f"`likelihood` must be one of {sorted(LIKELIHOODS)}, got {name!r}. Register a new one with "
            "`hinge_sc.module.register_likelihood`."
        )
    return LIKELIHOODS[name](n_genes, target_scale)


def likelihood_names() -> Mapping[str, type[Likelihood]]:
    """The registered likelihoods (a read-only view)."""
    from types import MappingProxyType

    return MappingProxyType(LIKELIHOODS)


register_likelihood(PointLikelihood)
register_likelihood(GaussianLikelihood)
