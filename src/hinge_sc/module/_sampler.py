"""Reverse masked-diffusion sampler (docs/method.md §5, "Sampling")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ._likelihood import PointLikelihood
from ._schedule import ranks_of, visibility

if TYPE_CHECKING:
    from collections.abc import Callable

    from hinge_sc._random import Noise
    from hinge_sc.nn import IncrementalDenoiser

    from ._likelihood import Likelihood, Outputs


def reverse_step_grid(n_steps_train: int, n_steps: int | None = None) -> np.ndarray:
    """Steps visited by the sampler, from ``T`` down to 0.

    With ``n_steps < T`` the grid is ``round(j·T/n_steps)`` (more genes revealed per step).

    Returns
    -------
    Integer array, strictly decreasing, starting at ``T`` and ending at 0.
    """
    n_steps = n_steps_train if n_steps is None else int(n_steps)
    if not 1 <= n_steps <= n_steps_train:
        raise ValueError(f"`n_steps` must be in [1, {n_steps_train}] (the training steps), got {n_steps}.")
    grid = np.unique(np.round(np.linspace(0, n_steps_train, n_steps + 1)).astype(np.int64))
    return grid[::-1].copy()


def reveal_values(
    out: Outputs,
    reveal: Literal["mean", "sample"],
    likelihood: Likelihood,
    noise: Noise,
    *,
    genes: torch.Tensor | None = None,
    n_genes: int | None = None,
    library: torch.Tensor | None = None,
) -> torch.Tensor:
    """Values written into newly revealed genes: the likelihood's point value or a draw from it.

    Parameters
    ----------
    out
        The denoiser's outputs (``"mean"`` and the likelihood's heads), ``(n, r)`` each.
    reveal
        ``"mean"`` (:meth:`Likelihood.point`) or ``"sample"`` (:meth:`Likelihood.sample`).
    likelihood
        The module's likelihood.
    noise
        Source of the draws (one full ``(n, n_genes)`` block per call with ``"sample"``).
    genes, n_genes
        Panel columns ``(n, r)`` of the entries of ``out`` in a panel of ``n_genes`` genes (``None``: all genes).
    library
        ``(n,)`` library sizes for count likelihoods (``None``: the reference depth).
    """
    if reveal == "mean":
        return likelihood.point(out, genes=genes, library=library)
    if reveal != "sample":
        raise ValueError(f"`reveal` must be 'mean' or 'sample', got {reveal!r}.")
    return likelihood.sample(out, noise, genes=genes, n_genes=n_genes, library=library)


def expected_values(
    out: Outputs, reveal: Literal["mean", "sample"], likelihood: Likelihood, *, genes: torch.Tensor | None = None,
    library: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Expected value of what :func:`reveal_values` writes: the point value, or the expectation of a draw."""
    if reveal == "sample":
        return likelihood.expected(out, genes=genes, library=library)
    return likelihood.point(out, genes=genes, library=library)


def _at(out: Outputs, genes: torch.Tensor) -> Outputs:
    """Each ``(n, G)`` output at the columns ``genes (n, r)``."""
    return {k: torch.gather(v, 1, genes) for k, v in out.items()}


def sample_masked(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Outputs],
    fill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    n_hidden: torch.Tensor,
    n_genes: int,
    *,
    grid: np.ndarray,
    noise: Noise,
    likelihood: Likelihood | None = None,
    reveal: Literal["mean", "sample"] = "mean",
    return_expected: bool = False,
    library: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Run the reverse process for ``noise.n_rows`` independent samples.

    For each sample draw a permutation, start with every gene hidden and, for each pair of grid steps
    ``t → s`` (``s < t``): predict :math:`\hat x_0 = f(x_t, t, m_t, m_s)`, write a value into the genes
    revealed by this step (:math:`m_s - m_t`), keep the genes revealed earlier, and refill the genes
    still hidden. Steps that reveal no gene are skipped. After the last step every gene is set.

    Parameters
    ----------
    denoise
        ``(x_t, visible, t, visible_prev) → outputs``: ``(n, G)`` tensors (``"mean"`` and the likelihood's heads,
        or the ``(n, G)`` mean alone), inputs ``(n, G)`` except ``t (n,)``.
    fill
        ``(x, visible, noise) → x`` with hidden entries replaced by the fill (``noise`` is ``(n, G)`` N(0, 1)).
    n_hidden
        Hidden genes ``k(t)`` for ``t = 0 … T``, long tensor (:func:`hidden_schedule`).
    n_genes
        ``G``.
    grid
        Output of :func:`reverse_step_grid`.
    noise
        Source of the permutations, fills and draws (:class:`hinge_sc._random.Noise`): one stream per spot makes a
        spot's samples independent of the other spots in the batch.
    likelihood
        What a reveal writes (:class:`~hinge_sc.module.Likelihood`); ``None``: the point likelihood (the mean).
    reveal
        ``"mean"``: the likelihood's point value, the predicted :math:`\hat x_0` (the paper); ``"sample"``: a draw
        from it (beyond the paper). Later steps condition on the written values, so the samples carry gene–gene
        and spot-level variability.
    return_expected
        Also return, for each gene, the expected value of what its reveal step wrote given the genes revealed
        before it (:func:`expected_values`). Averaged over samples, it estimates the same conditional mean as the
        samples' average (tower property) with less Monte-Carlo noise (Rao–Blackwell).
    library
        ``(n,)`` library sizes for count likelihoods (``None``: the reference depth).

    Returns
    -------
    ``(n, G)`` samples, and with ``return_expected`` the ``(n, G)`` expected values.
    """
    n, device = noise.n_rows, noise.device
    likelihood = likelihood if likelihood is not None else PointLikelihood(n_genes)
    ranks = ranks_of(noise.rand(n_genes))
    x = torch.zeros(n, n_genes, device=device)
    expected = torch.zeros(n, n_genes, device=device) if return_expected else None
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        k_t, k_s = int(n_hidden[t]), int(n_hidden[s])
        if k_s == k_t:
            continue  # this step reveals no gene
        m_t = visibility(ranks, torch.full((n,), k_t, device=device))
        m_s = visibility(ranks, torch.full((n,), k_s, device=device))
        x_t = fill(x, m_t, noise.randn(n_genes))
        out = denoise(x_t, m_t, torch.full((n,), int(t), device=device, dtype=torch.long), m_s)
        out = {"mean": out} if isinstance(out, torch.Tensor) else out
        genes = (m_s - m_t).bool().nonzero()[:, 1].view(n, k_t - k_s)  # every row reveals k_t - k_s genes
        out = _at(out, genes)
        value = reveal_values(out, reveal, likelihood, noise, genes=genes, n_genes=n_genes, library=library)
        x = (x * m_t).scatter_(1, genes, value.to(x.dtype))  # earlier genes unchanged, newly revealed set, rest 0
        if expected is not None:
            target = expected_values(out, reveal, likelihood, genes=genes, library=library)
            expected.scatter_(1, genes, target.to(x.dtype))
    return (x, expected) if expected is not None else x


def sample_incremental(
    denoiser: IncrementalDenoiser,
    condition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_hidden: torch.Tensor,
    n_genes: int,
    *,
    grid: np.ndarray,
    noise: Noise,
    likelihood: Likelihood,
    reveal: Literal["mean", "sample"] = "mean",
    mask_fill: Literal["gauss", "zero"] = "gauss",
    return_expected: bool = False,
    mean_offset: torch.Tensor | None = None,
    library: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""The reverse process of :func:`sample_masked` with an :class:`~hinge_sc.nn.IncrementalDenoiser`.

    Same random numbers, in the same order, and the same values up to float rounding; less work per step: the
    tokens of revealed genes are embedded once and kept, and only the genes a step reveals are predicted. Every
    sample reveals the same number of genes per step (exact-count masks), so the revealed genes of a step are the
    ``(n, r)`` block ``order[:, k(s):k(t)]`` of each sample's genes sorted by rank.

    Parameters
    ----------
    denoiser
        Token cache and pruned forward pass of the module's denoiser.
    condition
        ``(t, visible_prev) → c``, ``t (n,)``, ``visible_prev (n, G)`` → ``(n, d)``.
    n_hidden, n_genes, grid, noise, likelihood, reveal, return_expected, library
        As in :func:`sample_masked`.
    mask_fill
        The module's fill of hidden genes (only read with ``zero_emb``, where hidden tokens embed their fill).
    mean_offset
        ``(n, G)`` term added to the predicted means (the module's linear skip), or ``None``.

    Returns
    -------
    ``(n, G)`` samples, and with ``return_expected`` the ``(n, G)`` expected values.
    """
    n, device = noise.n_rows, noise.device
    order = noise.rand(n_genes).argsort(dim=1)  # genes by rank: `ranks_of` is the inverse permutation
    ranks = order.argsort(dim=1)
    denoiser.start(n, device)
    x = torch.zeros(n, n_genes, device=device)
    expected = torch.zeros(n, n_genes, device=device) if return_expected else None
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        k_t, k_s = int(n_hidden[t]), int(n_hidden[s])
        if k_s == k_t:
            continue
        fill = noise.randn(n_genes)  # drawn as in `sample_masked`, so the streams stay aligned
        if denoiser.mask_mechanism == "zero_emb":
            hidden = order[:, :k_t]
            values = torch.gather(fill, 1, hidden) if mask_fill == "gauss" else fill.new_zeros(hidden.shape)
            denoiser.fill_hidden(hidden, values)
        step = torch.full((n,), int(t), device=device, dtype=torch.long)
        c = condition(step, visibility(ranks, ranks.new_full((n,), k_s)))
        genes = order[:, k_s:k_t]
        out = denoiser.forward(c, genes)
        if mean_offset is not None:
            out["mean"] = out["mean"] + torch.gather(mean_offset, 1, genes)
        value = reveal_values(out, reveal, likelihood, noise, genes=genes, n_genes=n_genes, library=library)
        value = value.to(x.dtype)
        denoiser.reveal(genes, value)
        x.scatter_(1, genes, value)
        if expected is not None:
            target = expected_values(out, reveal, likelihood, genes=genes, library=library)
            expected.scatter_(1, genes, target.to(x.dtype))
    return (x, expected) if expected is not None else x
