"""Expression scales: raw counts ↔ the model scale, one definition for torch and numpy.

A spot's library size ``L`` is its total count over **all** measured genes (not only the panel). Spots with
``L = 0`` (no counts) map to 0 on the depth-normalised scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Scale = Literal["log2p1", "log1p_cp10k"]
#: The scales, in the order they are documented.
SCALES: tuple[str, ...] = ("log2p1", "log1p_cp10k")
#: Units of each scale, as written on colour bars and axes.
SCALE_LABELS: dict[str, str] = {"log2p1": "log2(count+1)", "log1p_cp10k": "ln(1 + counts per 10k)"}
#: Counts per spot after depth normalisation on ``"log1p_cp10k"``.
CP10K = 1e4

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def check_scale(scale: str, *, argument: str = "target_scale") -> str:
    """Return ``scale`` or raise a ValueError naming ``argument``."""
    if scale not in SCALES:
        raise ValueError(f"`{argument}` must be one of {SCALES}, found {scale!r}.")
    return scale


def to_model_scale(counts: Array, scale: Scale, library_size: Array | None = None) -> Array:
    r"""Raw counts ``(..., n_genes)`` → the model scale.

    .. math::

        \text{log2p1}: \log_2(n_g + 1) \qquad
        \text{log1p\_cp10k}: \ln\!\left(1 + 10^4\, n_g / L\right) \ (0 \text{ when } L = 0)

    Parameters
    ----------
    counts
        Raw counts, numpy array or torch tensor, shape ``(..., n_genes)``.
    scale
        ``"log2p1"`` or ``"log1p_cp10k"``.
    library_size
        ``L`` per spot, shape ``(...)`` (the total over all genes); default: the sum of ``counts`` over its last
        axis (only right when ``counts`` holds every gene). Unused on ``"log2p1"``.

    Returns
    -------
    Same type and shape as ``counts`` (numpy results are float64).
    """
    check_scale(scale, argument="scale")
    is_numpy = isinstance(counts, np.ndarray) or not hasattr(counts, "new_zeros")
    if is_numpy:
        counts = np.asarray(counts, dtype=np.float64)
    if scale == "log2p1":
        return np.log2(counts + 1.0) if is_numpy else (counts + 1.0).log2()
    lib = counts.sum(-1) if library_size is None else library_size
    if is_numpy:
        lib = np.asarray(lib, dtype=np.float64).reshape(counts.shape[:-1])
        factor = np.divide(CP10K, lib, out=np.zeros_like(lib), where=lib > 0)
        return np.log1p(counts * factor[..., None])
    lib = lib.to(counts.dtype).reshape(counts.shape[:-1])
    factor = (CP10K / lib.clamp_min(1e-12)) * (lib > 0)
    return (counts * factor.unsqueeze(-1)).log1p()


def to_counts(values: np.ndarray, scale: Scale) -> np.ndarray:
    """Model-scale values → (depth-normalised, for ``"log1p_cp10k"``) counts, clipped at 0; the inverse transform."""
    check_scale(scale, argument="scale")
    values = np.asarray(values, dtype=np.float64)
    counts = np.exp2(values) - 1.0 if scale == "log2p1" else np.expm1(values)
    return np.clip(counts, 0.0, None)


#: Lowest value of each scale (zero counts): generated values below it are not expression.
SCALE_FLOOR: dict[str, float] = {"log2p1": 0.0, "log1p_cp10k": 0.0}


def clip_to_floor(values: np.ndarray, scale: Scale) -> np.ndarray:
    """Clip model-scale ``values`` (any shape) at the floor of ``scale`` (0 = no counts); returns a new array."""
    return np.clip(values, SCALE_FLOOR[check_scale(scale, argument="scale")], None)


def rescale_total(counts: np.ndarray, library_size: float) -> np.ndarray:
    """Counts ``(..., n_genes)`` rescaled so each profile sums to ``library_size`` (all-zero profiles stay 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(-1, keepdims=True)
    return np.divide(counts * library_size, total, out=np.zeros_like(counts), where=total > 0)


def shift_depth(values: np.ndarray, ratio: np.ndarray | float) -> np.ndarray:
    r"""log2(count + 1) values predicted at one sequencing depth, moved to a depth ``ratio`` times as large.

    .. math::

        x' = \log_2\!\left((2^{x} - 1)\, r + 1\right), \qquad r = L_\text{new} / L_\text{train}

    The counts scale with depth; on log2(count + 1) that shifts every gene's level by an amount the image cannot
    tell (docs/method.md §6.1). ``ratio`` broadcasts against ``values`` from the left: a scalar, or one value
    per spot for ``(n_spots, G)`` and ``(n_spots, S, G)`` arrays.
    """
    values = np.asarray(values, dtype=np.float64)
    r = np.asarray(ratio, dtype=np.float64)
    r = r.reshape(r.shape + (1,) * (values.ndim - r.ndim))
    return np.log2(np.clip(np.exp2(values) - 1.0, 0.0, None) * r + 1.0)


def shift_depth_std(mean: np.ndarray, std: np.ndarray, ratio: np.ndarray | float) -> np.ndarray:
    r"""The s.d. of :func:`shift_depth` ``(x)`` to first order: :math:`\sigma' = \sigma \cdot r 2^{x} / ((2^x-1) r + 1)`."""
    mean = np.asarray(mean, dtype=np.float64)
    r = np.asarray(ratio, dtype=np.float64)
    r = r.reshape(r.shape + (1,) * (mean.ndim - r.ndim))
    slope = r * np.exp2(mean) / (np.clip(np.exp2(mean) - 1.0, 0.0, None) * r + 1.0)
    return np.asarray(std, dtype=np.float64) * slope


def depth_log_sd(library: np.ndarray, sections: np.ndarray | None) -> float | None:
    r"""Spread of sequencing depth between sections: the s.d. (``ddof=1``) of :math:`\ln` of each section's median
    library size.

    A new slide's depth is unknown from its image; this is the s.d. of :math:`\ln(L_\text{slide} / L_\text{train})`
    that :func:`hinge_sc.tl.generate` assumes for it (docs/method.md §6.1).

    Parameters
    ----------
    library
        ``(n_spots,)`` total counts per spot (over all genes).
    sections
        ``(n_spots,)`` section labels, or ``None``.

    Returns
    -------
    The s.d. (natural log units), or ``None`` with fewer than two sections with counts.
    """
    library = np.asarray(library, dtype=np.float64).ravel()
    if sections is None:
        return None
    sections = np.asarray(sections).ravel()
    if len(sections) != len(library):
        raise ValueError(f"`sections` must have one label per spot ({len(library)}), found {len(sections)}.")
    medians = [np.median(library[sections == s]) for s in np.unique(sections)]
    logs = np.log([m for m in medians if m > 0])
    return float(logs.std(ddof=1)) if len(logs) >= 2 else None


def level_log_sd(counts, library: np.ndarray, sections: np.ndarray, *, pseudocount: float = 0.5) -> np.ndarray:
    r"""Spread of each gene's level between sections: the s.d. (``ddof=1``) over sections of
    :math:`\ln\big((\sum_i n_{ig} + c) / \sum_i L_i\big)`, the log share of the section's counts that gene
    :math:`g` takes (pooled over the section's spots ``i``, pseudocount :math:`c`).

    Patients differ in tissue composition (her2st patient C is rich in plasma cells, A1 is not: immunoglobulin genes
    differ by :math:`e^5`), which shifts a gene's level on a new slide by an amount a model trained on one patient
    cannot know; this is the s.d. of that log factor that :func:`hinge_sc.tl.generate` (``level_sd``) assumes
    (docs/method.md §6.2).

    Parameters
    ----------
    counts
        ``(n_spots, G)`` raw counts, dense or scipy sparse.
    library
        ``(n_spots,)`` total counts per spot over **all** genes.
    sections
        ``(n_spots,)`` section labels.
    pseudocount
        Counts added to each gene's section total, so that a gene absent from a section has a finite level.

    Returns
    -------
    ``(G,)`` float64 s.d. in natural-log units; NaN with fewer than two sections with counts.
    """
    import scipy.sparse as sp

    library = np.asarray(library, dtype=np.float64).ravel()
    sections = np.asarray(sections).ravel()
    if len(sections) != len(library) or counts.shape[0] != len(library):
        raise ValueError(
            f"`counts` ({counts.shape[0]} rows), `library` ({len(library)}) and `sections` ({len(sections)}) must "
            "have one entry per spot."
        )
    labels, which = np.unique(sections, return_inverse=True)
    member = sp.csr_matrix((np.ones(len(which)), (which, np.arange(len(which)))), shape=(len(labels), len(which)))
    totals = member @ counts  # (n_sections, G)
    totals = totals.toarray() if sp.issparse(totals) else np.asarray(totals, dtype=np.float64)
    depth = np.asarray(member @ library, dtype=np.float64).ravel()
    keep = depth > 0
    if keep.sum() < 2:
        return np.full(counts.shape[1], np.nan)
    levels = np.log(totals[keep] + pseudocount) - np.log(depth[keep])[:, None]
    return levels.std(axis=0, ddof=1)


def depth_sd_of_values(mean: np.ndarray, log_sd: float | np.ndarray) -> np.ndarray:
    r"""The s.d. on log2(count + 1) that a log-normal depth factor of s.d. ``log_sd`` adds, to first order.

    For :math:`x' = \log_2((2^x - 1) r + 1)` with :math:`\ln r \sim N(0, \sigma^2)` (:func:`shift_depth`),
    :math:`\partial x' / \partial \ln r |_{r=1} = (1 - 2^{-x}) / \ln 2`, so the added s.d. is
    :math:`\sigma (1 - 2^{-x}) / \ln 2` — 0 at a count of 0, :math:`1.44\,\sigma` for highly expressed genes.
    ``log_sd`` is one number, or ``(G,)`` per gene (a gene's level factor, :func:`level_log_sd`).
    """
    mean = np.asarray(mean, dtype=np.float64)
    return np.asarray(log_sd, dtype=np.float64) * (1.0 - np.exp2(-np.clip(mean, 0.0, None))) / np.log(2.0)


def thin_to_depth(samples: np.ndarray, ratio: np.ndarray | float, seeds: np.ndarray) -> np.ndarray:
    r"""log2(count + 1) samples drawn at the training depth, moved to a depth ``ratio`` times as large *with* the
    sampling noise of the new depth.

    For :math:`r < 1` the counts :math:`c = 2^x - 1` (stochastically rounded) are binomially thinned,
    :math:`c' \sim \mathrm{Binomial}(c, r)`: reads sequenced at the training depth, each kept with probability
    :math:`r` — the exact law of the counts a shallower sequencing of the same spot gives, so a shallow slide gets
    the wider intervals its sparser counts have (docs/method.md §6.1). For :math:`r \ge 1` the counts are scaled,
    :math:`c' = r c` (:func:`shift_depth`): a deeper slide is less noisy, which samples at the training depth cannot
    show. :math:`E[c'] = r c` either way.

    Parameters
    ----------
    samples
        ``(n_spots, S, G)`` samples on log2(count + 1).
    ratio
        Depth ratio :math:`r = L_\text{new} / L_\text{train}`: a scalar, ``(n_spots,)``, ``(n_spots, S)``, or
        ``(n_spots, S, G)`` / ``(1, S, G)`` for a factor per gene as well (a gene's level on the new slide).
    seeds
        ``(n_spots,)`` per-spot seeds (:func:`hinge_sc._random.spot_seeds`): each spot's draws depend only on its
        seed, whatever the other spots.

    Returns
    -------
    ``(n_spots, S, G)`` float32 samples on log2(count + 1).
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"`samples` must be (n_spots, S, G), found shape {samples.shape}.")
    r = np.asarray(ratio, dtype=np.float64)
    r = np.broadcast_to(r.reshape(r.shape + (1,) * (3 - r.ndim)), samples.shape)
    counts = np.clip(np.exp2(samples) - 1.0, 0.0, None)
    out = counts * r
    for i, seed in enumerate(np.asarray(seeds)):
        low = r[i] < 1.0
        if not low.any():
            continue
        rng = np.random.default_rng(int(seed))
        c = counts[i][low]
        whole = np.floor(c) + (rng.random(c.shape) < c - np.floor(c))
        out[i][low] = rng.binomial(whole.astype(np.int64), r[i][low])
    return np.log2(out + 1.0).astype(np.float32)


def thinning_sd(mean: np.ndarray, ratio: np.ndarray | float) -> np.ndarray:
    r"""First-order s.d. on log2(count + 1) that the binomial thinning of :func:`thin_to_depth` adds to a value
    ``mean`` (at the training depth): :math:`\sqrt{c\,r(1-r)} / ((c r + 1)\ln 2)` with :math:`c = 2^x - 1`, 0 for
    :math:`r \ge 1`. ``ratio`` broadcasts from the left as in :func:`shift_depth`."""
    mean = np.asarray(mean, dtype=np.float64)
    r = np.asarray(ratio, dtype=np.float64)
    r = np.clip(r.reshape(r.shape + (1,) * (mean.ndim - r.ndim)), 0.0, 1.0)
    c = np.clip(np.exp2(mean) - 1.0, 0.0, None)
    return np.sqrt(c * r * (1.0 - r)) / ((c * r + 1.0) * np.log(2.0))
