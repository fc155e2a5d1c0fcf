"""Masked-diffusion schedule and warm-start curriculum (docs/method.md §5).

Everything here is a pure function: the training plan and the sampler only call them.
Notation: ``m_t`` in {0, 1}^G with 1 = visible; ``t = 0`` all visible, ``t = T`` all hidden.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import numpy as np
import torch

ScheduleName = Literal["poly_auto", "linear", "cosine", "sqrt", "power"]

_FLOOR_TOL = 1e-9


def poly_auto_exponent(n_genes: int, n_steps: int) -> float:
    r"""Exponent :math:`\zeta` of the "poly-auto" schedule.

    .. math::

        \zeta = \mathrm{clamp}\left(\frac{\ln G}{\ln T}, 1.05, 4\right)

    chosen so that exactly one gene is visible at ``t = T - 1``.

    Parameters
    ----------
    n_genes
        Panel size ``G``.
    n_steps
        Number of diffusion steps ``T`` (≥ 2).
    """
    if n_genes < 1 or n_steps < 2:
        raise ValueError(f"`n_genes` must be ≥ 1 and `n_steps` ≥ 2, got {n_genes} and {n_steps}.")
    return float(min(max(math.log(n_genes) / math.log(n_steps), 1.05), 4.0))


#: Largest diffusion length ``T`` (the paper uses 50; the schedule and the sampler's step grid are ``O(T)``).
MAX_DIFFUSION_STEPS = 10_000


def check_n_steps(n_steps: object, *, argument: str = "n_steps") -> int:
    """Return ``n_steps`` (the diffusion length ``T``) as an int after checking it is an integer in 1 … 10,000."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise TypeError(f"`{argument}` (the diffusion length T) must be an integer, found {n_steps!r}.")
    if not 1 <= int(n_steps) <= MAX_DIFFUSION_STEPS:
        raise ValueError(
            f"`{argument}` (the diffusion length T) must be in 1 … {MAX_DIFFUSION_STEPS:,}, found {n_steps:,}; the "
            "paper uses 50. A saved model that declares more is corrupt or was edited."
        )
    return int(n_steps)


def hidden_schedule(
    n_genes: int,
    n_steps: int,
    schedule: ScheduleName = "poly_auto",
    power: float | None = None,
) -> np.ndarray:
    r"""Number of hidden genes ``k(t)`` for ``t = 0 … T``.

    .. math::

        k(t) = \left\lfloor G \cdot \gamma(t/T) \right\rfloor, \qquad
        \gamma_\text{poly}(s) = 1 - (1 - s)^\zeta

    with :math:`\gamma(s) = s` (linear), :math:`1 - \cos(\pi s / 2)` (cosine), :math:`\sqrt{s}` (sqrt)
    and the polynomial with a fixed ``power`` (power). Computed in float64 with a small tolerance
    before the floor; ``k(0) = 0`` and ``k(T) = G`` are pinned.

    Parameters
    ----------
    n_genes
        Panel size ``G``.
    n_steps
        Number of diffusion steps ``T``.
    schedule
        Name of the schedule.
    power
        Exponent for ``schedule="power"``.

    Returns
    -------
    Integer array of shape ``(T + 1,)``, non-decreasing, from 0 to ``G``.
    """
    if n_genes < 1 or n_steps < 1:
        raise ValueError(f"`n_genes` and `n_steps` must be ≥ 1, got {n_genes} and {n_steps}.")
    s = np.arange(n_steps + 1, dtype=np.float64) / n_steps
    if schedule == "poly_auto":
        gamma = 1.0 - (1.0 - s) ** poly_auto_exponent(n_genes, max(n_steps, 2))
    elif schedule == "power":
        if power is None or power <= 0:
            raise ValueError(f"`schedule='power'` needs a positive `power`, got {power!r}.")
        gamma = 1.0 - (1.0 - s) ** power
    elif schedule == "linear":
        gamma = s
    elif schedule == "cosine":
        gamma = 1.0 - np.cos(0.5 * np.pi * s)
    elif schedule == "sqrt":
        gamma = np.sqrt(s)
    else:
        raise ValueError(
            f"`schedule` must be one of 'poly_auto', 'linear', 'cosine', 'sqrt', 'power', got {schedule!r}."
        )
    k = np.floor(n_genes * gamma + _FLOOR_TOL).astype(np.int64)
    k = np.clip(np.maximum.accumulate(k), 0, n_genes)
    k[0], k[-1] = 0, n_genes
    return k


def warm_start_cap(counts: np.ndarray, n_genes: int, max_mask_ratio: float = 0.2) -> int:
    r"""Largest step ``t_cap ≥ 1`` with ``k(t) ≤ ρ·G`` (warm-start curriculum, §5).

    .. math::

        t_\text{cap} = \max\{t \ge 1 : k(t) \le \rho G\}

    Parameters
    ----------
    counts
        Output of :func:`hidden_schedule`, shape ``(T + 1,)``.
    n_genes
        Panel size ``G``.
    max_mask_ratio
        ``ρ`` in (0, 1].

    Returns
    -------
    ``t_cap``; at least 1 so that the curriculum always has a step to draw.
    """
    if not 0 < max_mask_ratio <= 1:
        raise ValueError(f"`max_mask_ratio` must be in (0, 1], got {max_mask_ratio}.")
    allowed = np.nonzero(counts[1:] <= max_mask_ratio * n_genes + _FLOOR_TOL)[0]
    return int(allowed.max() + 1) if len(allowed) else 1


def curriculum_max_step(epoch: int, n_steps: int, t_cap: int, warmup_epochs: int) -> int:
    """Largest step drawn during ``epoch`` (0-based): ``t_cap`` while warming up, else ``T``."""
    return t_cap if epoch < warmup_epochs else n_steps


def permutation_ranks(
    n_samples: int, n_genes: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Rank of every gene in one random permutation per sample.

    Gene ``g`` of sample ``i`` is hidden at step ``t`` iff ``ranks[i, g] < k(t)``, which makes the masks
    nested and exact-count (§5).

    Returns
    -------
    Long tensor of shape ``(n_samples, n_genes)``; each row is a permutation of ``0 … G-1``.
    """
    gen_device = device if generator is None else generator.device
    noise = torch.rand(n_samples, n_genes, generator=generator, device=gen_device)
    return ranks_of(noise).to(device)


def ranks_of(uniform: torch.Tensor) -> torch.Tensor:
    """Ranks ``(n, G)`` of i.i.d. uniform draws ``(n, G)``: a uniformly random permutation per row."""
    return uniform.argsort(dim=1).argsort(dim=1)


def visibility(ranks: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Visibility mask ``m`` (1 = visible) for ``k`` hidden genes per sample.

    Parameters
    ----------
    ranks
        ``(n, G)`` from :func:`permutation_ranks`.
    k
        ``(n,)`` number of hidden genes per sample.

    Returns
    -------
    Float tensor ``(n, G)``.
    """
    return (ranks >= k.unsqueeze(1)).to(torch.float32)
