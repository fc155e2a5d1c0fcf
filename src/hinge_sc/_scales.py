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
