"""Metric functions of :func:`hinge_sc.tl.evaluate`: plain arrays in, numbers out (docs/method.md §7).

Every function takes ``(n_spots, n_genes)`` arrays on one expression scale. Genes that are constant in the
measured or the predicted values have no correlation: they get NaN and are left out of every mean, so a
constant gene never turns a summary into NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

if TYPE_CHECKING:
    from collections.abc import Sequence

from hinge_sc._scales import SCALES, Scale, to_counts, to_model_scale

from ._uncertainty import (
    central_interval,
    crps_gaussian,
    crps_samples,
    energy_score,
    interval_coverage,
)

__all__ = ["SCALES", "Scale"]

#: Central intervals whose coverage :func:`section_metrics` reports.
_INTERVALS = (0.5, 0.9)


def panel_cp10k(values: np.ndarray, scale: Scale) -> np.ndarray:
    r"""Put expression on the panel-normalised scale :math:`\ln(1 + 10^4 x_g / \sum_{g'} x_{g'})`.

    ``values`` (``(..., n_genes)``, e.g. spots × genes or spots × samples × genes) are turned back into
    counts (:math:`2^v - 1` for ``"log2p1"``, :math:`e^v - 1` for ``"log1p_cp10k"``, clipped at 0) and
    divided by their total over the last axis (the panel). Both measured and generated values go through this,
    so a method's scale (and the library size a generator cannot see) does not enter the comparison.
    Rows with total 0 give 0.
    """
    return to_model_scale(to_counts(values, scale), "log1p_cp10k")


def _varying(y: np.ndarray) -> np.ndarray:
    return np.ptp(y, axis=0) > 0 if len(y) > 1 else np.zeros(y.shape[1], dtype=bool)


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation across spots for each gene (column).

    Parameters
    ----------
    y_true, y_pred
        Shape (n_spots, n_genes).

    Returns
    -------
    Shape (n_genes,); NaN where either column is constant (or fewer than 2 spots).
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"`y_true` and `y_pred` must be 2-D of the same shape, found {y_true.shape}, {y_pred.shape}.")
    out = np.full(y_true.shape[1], np.nan)
    valid = _varying(y_true) & _varying(y_pred)
    a = y_true[:, valid] - y_true[:, valid].mean(0)
    b = y_pred[:, valid] - y_pred[:, valid].mean(0)
    r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
    out[valid] = np.clip(r, -1.0, 1.0)
    return out


def spearman_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Spearman correlation (Pearson of average ranks) across spots for each gene; NaN for constant genes."""
    return pearson_per_gene(rankdata(y_true, axis=0), rankdata(y_pred, axis=0))


def pcc_top_k(pcc: np.ndarray, k: int) -> float:
    """PCC-K: mean of the ``k`` largest finite per-gene correlations.

    NaN entries (constant genes) are ignored. With fewer than ``k`` finite values, all of them are averaged
    (the number used is ``min(k, n_finite)``). Ties do not matter: the mean of the top ``k`` values is unique.
    NaN if no value is finite.
    """
    if k < 1:
        raise ValueError(f"`k` must be a positive integer, found {k}.")
    pcc = np.asarray(pcc, dtype=np.float64)
    finite = np.sort(pcc[np.isfinite(pcc)])[::-1]
    return float(finite[:k].mean()) if finite.size else float("nan")


def top_genes(y_true: np.ndarray, n: int, by: Literal["variance", "mean"]) -> np.ndarray:
    """Return the indices of the ``n`` genes with the largest measured variance or mean across spots.

    Ties are broken by column order (a stable sort), so the choice is reproducible and the same for every
    method scored on the same measurements.

    Parameters
    ----------
    y_true
        Measured values, (n_spots, n_genes).
    n
        Number of genes (all genes if there are fewer).
    by
        ``"variance"`` (highly variable genes) or ``"mean"`` (highly expressed genes).

    Returns
    -------
    Sorted column indices, shape (min(n, n_genes),).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    if by == "variance":
        score = y_true.var(0)
    elif by == "mean":
        score = y_true.mean(0)
    else:
        raise ValueError(f"`by` must be 'variance' or 'mean', found {by!r}.")
    return np.sort(np.argsort(-score, kind="stable")[:n])


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def relative_variance_distance(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    r"""Relative variance distance of Stem :cite:p:`Zhu2025`, over genes that vary in the measurements.

    .. math::

        \mathrm{RVD} = \frac{1}{G} \sum_g \Big(\frac{\sigma^2_{pred,g} - \sigma^2_{true,g}}
        {\sigma^2_{true,g}}\Big)^2

    0 when the predicted spread across spots matches the measured one; 1 for a constant prediction.
    """
    var_t, var_p = np.var(y_true, axis=0), np.var(y_pred, axis=0)
    ok = var_t > 0
    return float(np.mean(((var_p[ok] - var_t[ok]) / var_t[ok]) ** 2)) if ok.any() else float("nan")


def coexpression_consistency(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    r"""Agreement of the gene–gene correlation matrices of measured and predicted expression.

    Using only the genes that vary in both (n_spots, n_genes) arrays, with :math:`C` the gene × gene Pearson
    correlation matrix across spots:

    .. math::

        r_{co} = \operatorname{corr}\big(\operatorname{triu}_1(C_{pred}), \operatorname{triu}_1(C_{true})\big),
        \qquad d_F = \lVert C_{pred} - C_{true} \rVert_F / \lVert C_{true} \rVert_F .

    Returns
    -------
    ``(r_co, d_F)``; ``r_co`` is NaN with fewer than 3 usable genes, ``d_F`` with fewer than 2.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    valid = _varying(y_true) & _varying(y_pred)
    if valid.sum() < 2:
        return float("nan"), float("nan")
    c_true = np.corrcoef(y_true[:, valid], rowvar=False)
    c_pred = np.corrcoef(y_pred[:, valid], rowvar=False)
    frob = float(np.linalg.norm(c_pred - c_true) / np.linalg.norm(c_true))
    iu = np.triu_indices(c_true.shape[0], k=1)
    r = pearson_per_gene(c_true[iu][:, None], c_pred[iu][:, None])[0] if len(iu[0]) > 1 else np.nan
    return float(r), frob


def morans_i(values: np.ndarray, coordinates: np.ndarray, n_neighs: int = 6) -> np.ndarray:
    r"""Moran's I of each column on a k-nearest-neighbour spot graph, computed by squidpy.

    The graph is :func:`squidpy.gr.spatial_neighbors` (``coord_type="generic"``, ``n_neighs``) and the
    statistic :func:`squidpy.gr.spatial_autocorr` (``mode="moran"``, row-normalised weights):

    .. math::

        I = \frac{N}{\sum_{ij} w_{ij}} \frac{\sum_{ij} w_{ij} z_i z_j}{\sum_i z_i^2}, \quad z = x - \bar x .

    Parameters
    ----------
    values
        (n_spots, n_genes).
    coordinates
        Spot centres, (n_spots, 2), any unit.
    n_neighs
        Neighbours per spot.

    Returns
    -------
    Shape (n_genes,); NaN for constant columns or fewer than ``n_neighs + 1`` spots.
    """
    import logging
    import warnings

    import anndata as ad

    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape[1], np.nan)
    valid = _varying(values)
    if len(values) <= n_neighs or not valid.any():
        return out
    import scanpy as sc

    from hinge_sc._third_party import import_squidpy

    sq = import_squidpy()
    tmp = ad.AnnData(values[:, valid].astype(np.float32))
    tmp.var_names = [f"g{i}" for i in range(tmp.n_vars)]
    tmp.obsm["spatial"] = np.asarray(coordinates, dtype=np.float64)[:, :2]
    quiet = logging.getLogger("spatialdata._logging")  # squidpy logs each graph it builds through this logger
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), sc.settings.verbosity.override("error"):
            warnings.simplefilter("ignore")
            sq.gr.spatial_neighbors(tmp, coord_type="generic", n_neighs=n_neighs)
            res = sq.gr.spatial_autocorr(tmp, mode="moran", n_perms=None, copy=True, n_jobs=1, show_progress_bar=False)
    finally:
        quiet.setLevel(level)
    out[valid] = res["I"].reindex(tmp.var_names).to_numpy()
    return out


def std_error_spearman(y_true: np.ndarray, y_pred: np.ndarray, std: np.ndarray) -> float:
    """Mean over genes of the Spearman correlation, across spots, of predicted s.d. and absolute error.

    Positive when the model is less sure where it is more wrong. Genes with a constant s.d. or error are
    left out.
    """
    err = np.abs(np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))
    return nanmean(spearman_per_gene(err, np.asarray(std, dtype=np.float64)))


def gene_set_mean(values: np.ndarray, index: Sequence[int] | np.ndarray) -> float:
    """Mean of the finite ``values`` at ``index`` (NaN if none)."""
    return nanmean(np.asarray(values, dtype=np.float64)[np.asarray(index, dtype=int)])


def section_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    top_k: Sequence[int] = (10, 50, 200),
    *,
    n_top_genes: int = 50,
    coordinates: np.ndarray | None = None,
    n_neighs: int = 6,
    std: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    scale: str | None = None,
    std_n_samples: int | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Summary metrics of one section and its per-gene table.

    Parameters
    ----------
    y_true, y_pred
        Measured and predicted values on one scale, (n_spots, n_genes).
    top_k
        The K of PCC-K.
    n_top_genes
        Size of the highly variable / highly expressed gene sets (chosen on ``y_true``).
    coordinates
        Spot centres (n_spots, 2) for Moran's I; ``None`` leaves the spatial metrics NaN.
    n_neighs
        Neighbours of the spot graph of Moran's I.
    std, samples
        Predicted s.d. (n_spots, n_genes) and/or samples (n_spots, S, n_genes) for the uncertainty metrics;
        intervals and CRPS come from the samples when given, else from a Gaussian with ``y_pred`` and ``std``;
        the energy score needs samples.
    scale
        The scale of ``y_true`` and ``samples``; on ``"log2p1"`` with samples, ``crps_counts`` is the CRPS of the
        samples taken back to counts (:math:`2^x - 1`) against the measured counts (NaN otherwise).
    std_n_samples
        When ``std`` is the s.d. of that many generated samples, intervals from it are the samples' Student-t
        prediction intervals (:func:`~hinge_sc.tl._uncertainty.central_interval`), not Gaussian ones.

    Returns
    -------
    ``(row, per_gene)``: a dict of summary metrics (see :func:`hinge_sc.tl.evaluate`) and a DataFrame with one row per
    gene (``pearson``, ``spearman``, ``mse``, ``moran_measured``, ``moran_generated``, ``crps``, ``hvg``, ``heg``).
    """
    pcc, scc = pearson_per_gene(y_true, y_pred), spearman_per_gene(y_true, y_pred)
    n_genes = y_true.shape[1]
    hvg, heg = top_genes(y_true, n_top_genes, "variance"), top_genes(y_true, n_top_genes, "mean")
    coexpr_r, coexpr_f = coexpression_consistency(y_true, y_pred)
    moran = np.full((2, n_genes), np.nan)
    if coordinates is not None:
        moran = morans_i(np.hstack([y_true, y_pred]), coordinates, n_neighs).reshape(2, n_genes)
    both = np.isfinite(moran).all(0)
    row = {
        "n_spots": int(y_true.shape[0]),
        "n_genes": int(n_genes),
        "n_valid_genes": int(np.isfinite(pcc).sum()),
        "pcc_mean": nanmean(pcc),
        "spearman_mean": nanmean(scc),
        **{f"pcc_{k}": pcc_top_k(pcc, k) for k in top_k},
        f"pcc_hvg{n_top_genes}": gene_set_mean(pcc, hvg),
        f"pcc_heg{n_top_genes}": gene_set_mean(pcc, heg),
        "mse": float(np.mean((y_pred - y_true) ** 2)),
        "mae": float(np.mean(np.abs(y_pred - y_true))),
        "rvd": relative_variance_distance(y_true, y_pred),
        "coexpr_pcc": coexpr_r,
        "coexpr_frobenius": coexpr_f,
        "moran_measured": nanmean(moran[0]),
        "moran_generated": nanmean(moran[1]),
        "moran_pcc": pearson_per_gene(moran[0, both, None], moran[1, both, None])[0] if both.sum() > 1 else np.nan,
    }
    for level in _INTERVALS:
        if samples is None and std is None:
            row[f"coverage_{round(level * 100)}"] = np.nan
            continue
        lo, hi = central_interval(level, samples=samples, mean=y_pred, std=std, n_samples=std_n_samples)
        row[f"coverage_{round(level * 100)}"] = interval_coverage(y_true, lo, hi)
    spread = std if std is not None else (samples.std(axis=1) if samples is not None else None)
    row["std_error_spearman"] = np.nan if spread is None else std_error_spearman(y_true, y_pred, spread)
    crps = np.full(n_genes, np.nan)
    if samples is not None or std is not None:
        crps = (crps_samples(y_true, samples) if samples is not None else crps_gaussian(y_true, y_pred, std)).mean(0)
    row["crps"] = nanmean(crps)
    row["crps_counts"] = (
        nanmean(crps_samples(to_counts(y_true, "log2p1"), to_counts(samples, "log2p1")).mean(0))
        if samples is not None and scale == "log2p1"
        else np.nan
    )
    row["energy_score"] = np.nan if samples is None else float(energy_score(y_true, samples).mean())
    flags = np.zeros((2, n_genes), dtype=bool)
    flags[0, hvg], flags[1, heg] = True, True
    per_gene = pd.DataFrame({
        "pearson": pcc, "spearman": scc, "mse": np.mean((y_pred - y_true) ** 2, axis=0),
        "moran_measured": moran[0], "moran_generated": moran[1], "crps": crps, "hvg": flags[0], "heg": flags[1],
    })  # fmt: skip
    return row, per_gene
