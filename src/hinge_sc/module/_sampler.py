"""Reverse masked-diffusion sampler (docs/method.md §5, "Sampling")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ._schedule import ranks_of, visibility

if TYPE_CHECKING:
    from collections.abc import Callable

    from hinge_sc._random import Noise
    from hinge_sc.nn import IncrementalDenoiser


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


def rectified_mean(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    r"""Mean of :math:`\max(0, X)` for :math:`X \sim \mathcal N(\mu, \sigma^2)`: :math:`\mu\,\Phi(\mu/\sigma) +
    \sigma\,\varphi(\mu/\sigma)` (docs/method.md §5.5).

    The expected value of a gene that :func:`reveal_values` draws with ``reveal="sample"`` (draws are clipped at 0,
    the floor of both expression scales).
    """
    sd = torch.exp(0.5 * log_var)
    z = mean / sd
    normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype), torch.ones((), dtype=mean.dtype))
    return mean * normal.cdf(z) + sd * torch.exp(normal.log_prob(z))


def reveal_values(
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    reveal: Literal["mean", "sample"],
    noise: Noise,
    *,
    genes: torch.Tensor | None = None,
    n_genes: int | None = None,
) -> torch.Tensor:
    r"""Values written into newly revealed genes: the mean, or :math:`\max(0, \mu + e^{\frac12 \log\sigma^2}\epsilon)`.

    Parameters
    ----------
    out
        The denoiser's ``(n, G)`` mean, or a pair (mean, log-variance).
    reveal
        ``"mean"`` or ``"sample"``.
    noise
        Source of :math:`\epsilon` (one ``(n, G)`` standard normal draw per call with ``"sample"``).
    genes, n_genes
        When ``out`` holds the predictions of some genes only, ``(n, r)``: their columns ``(n, r)`` in the panel
        of ``n_genes`` genes. The full ``(n, n_genes)`` draw is made and its entries at ``genes`` are used, so the
        random stream is the same as for full predictions.
    """
    mean, log_var = out if isinstance(out, tuple) else (out, None)
    if reveal == "mean":
        return mean
    if reveal != "sample":
        raise ValueError(f"`reveal` must be 'mean' or 'sample', got {reveal!r}.")
    if log_var is None:
        raise ValueError("`reveal='sample'` needs a denoiser that predicts a variance (`likelihood='gaussian'`).")
    eps = noise.randn(mean.shape[1] if genes is None else n_genes)
    if genes is not None:
        eps = torch.gather(eps, 1, genes)
    return (mean + torch.exp(0.5 * log_var) * eps).clamp_min(0.0)


def sample_masked(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    fill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    n_hidden: torch.Tensor,
    n_genes: int,
    *,
    grid: np.ndarray,
    noise: Noise,
    reveal: Literal["mean", "sample"] = "mean",
    return_expected: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Run the reverse process for ``noise.n_rows`` independent samples.

    For each sample draw a permutation, start with every gene hidden and, for each pair of grid steps
    ``t → s`` (``s < t``): predict :math:`\hat x_0 = f(x_t, t, m_t, m_s)`, write it into the genes
    revealed by this step (:math:`m_s - m_t`), keep the genes revealed earlier, and refill the genes
    still hidden. Steps that reveal no gene are skipped. After the last step every gene is set.

    Parameters
    ----------
    denoise
        ``(x_t, visible, t, visible_prev) → x0_hat``, all ``(n, G)`` except ``t (n,)``; or ``→ (mean,
        log_variance)`` for ``reveal="sample"``.
    fill
        ``(x, visible, noise) → x`` with hidden entries replaced by the fill (``noise`` is ``(n, G)`` N(0, 1)).
    n_hidden
        Hidden genes ``k(t)`` for ``t = 0 … T``, long tensor (:func:`hidden_schedule`).
    n_genes
        ``G``.
    grid
        Output of :func:`reverse_step_grid`.
    noise
        Source of the permutations and fills (:class:`hinge_sc._random.Noise`): one stream per spot makes a
        spot's samples independent of the other spots in the batch.
    reveal
        What a step writes into the genes it reveals: ``"mean"``, the predicted :math:`\hat x_0` (the paper), or
        ``"sample"``, a draw :math:`\hat x_0 + \sigma\,\epsilon` from the predicted Gaussian (beyond the paper),
        clipped at 0, the floor of both expression scales. Later steps condition on the drawn values, so the
        samples carry gene–gene and spot-level variability.
    return_expected
        Also return, for each gene, the expected value of what its reveal step wrote given the genes revealed
        before it: the predicted mean with ``reveal="mean"`` (then equal to the samples), the mean of the clipped
        Gaussian (:func:`rectified_mean`) with ``reveal="sample"``. Averaged over samples, it estimates the same
        conditional mean as the samples' average (tower property) with less Monte-Carlo noise (Rao–Blackwell).

    Returns
    -------
    ``(n, G)`` samples, and with ``return_expected`` the ``(n, G)`` expected values.
    """
    n, device = noise.n_rows, noise.device
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
        value = reveal_values(out, reveal, noise)
        revealed = m_s - m_t
        x = x * m_t + value * revealed  # earlier genes unchanged, newly revealed set, rest 0
        if expected is not None:
            mean = out[0] if isinstance(out, tuple) else out
            target = rectified_mean(*out) if reveal == "sample" else mean
            expected = expected * m_t + target * revealed
    return (x, expected) if expected is not None else x


def sample_incremental(
    denoiser: IncrementalDenoiser,
    condition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_hidden: torch.Tensor,
    n_genes: int,
    *,
    grid: np.ndarray,
    noise: Noise,
    reveal: Literal["mean", "sample"] = "mean",
    mask_fill: Literal["gauss", "zero"] = "gauss",
    log_variance_offset: torch.Tensor | float = 0.0,
    return_expected: bool = False,
    mean_offset: torch.Tensor | None = None,
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
    n_hidden, n_genes, grid, noise, reveal, return_expected
        As in :func:`sample_masked`.
    mask_fill
        The module's fill of hidden genes (only read with ``zero_emb``, where hidden tokens embed their fill).
    log_variance_offset
        Added to the predicted log-variance (the calibration :math:`\log\tau^2` of
        :meth:`~hinge_sc.module.HINGEModule.calibrate_variance`).
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
    with_variance = reveal == "sample"
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
        out = denoiser.forward(c, genes, return_log_variance=with_variance)
        if mean_offset is not None:
            offset = torch.gather(mean_offset, 1, genes)
            out = (out[0] + offset, out[1]) if with_variance else out + offset
        if with_variance:
            out = (out[0], out[1] + log_variance_offset)
        value = reveal_values(out, reveal, noise, genes=genes, n_genes=n_genes).to(x.dtype)
        denoiser.reveal(genes, value)
        x.scatter_(1, genes, value)
        if expected is not None:
            target = rectified_mean(*out) if with_variance else out
            expected.scatter_(1, genes, target.to(x.dtype))
    return (x, expected) if expected is not None else x

