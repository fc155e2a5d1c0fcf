"""Score generated expression against measured counts: :func:`evaluate` (HINGE_METHOD §7)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from hinge_sc._scales import check_scale, to_model_scale

from .._validators import (
    check_counts,
    check_genes,
    check_genes_given,
    check_key_free,
    check_n_obs,
    check_prediction_frame,
)
from ._metrics import (
    SCALES,
    Scale,
    central_interval,
    coexpression_consistency,
    gene_set_mean,
    interval_coverage,
    morans_i,
    nanmean,
    panel_cp10k,
    pcc_top_k,
    pearson_per_gene,
    relative_variance_distance,
    spearman_per_gene,
    std_error_spearman,
    top_genes,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

__all__ = [
    "coexpression_consistency",
    "evaluate",
    "pcc_top_k",
    "pearson_per_gene",
    "section_metrics",
    "spearman_per_gene",
]

logger = logging.getLogger(__name__)

_INTERVALS = (0.5, 0.9)


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
        intervals come from the samples when given, else from a Gaussian with ``std``.

    Returns
    -------
    ``(row, per_gene)``: a dict of summary metrics (see :func:`evaluate`) and a DataFrame with one row per
    gene (``pearson``, ``spearman``, ``mse``, ``moran_measured``, ``moran_generated``, ``hvg``, ``heg``).
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
        lo, hi = central_interval(level, samples=samples, mean=y_pred, std=std)
        row[f"coverage_{round(level * 100)}"] = interval_coverage(y_true, lo, hi)
    spread = std if std is not None else (samples.std(axis=1) if samples is not None else None)
    row["std_error_spearman"] = np.nan if spread is None else std_error_spearman(y_true, y_pred, spread)
    flags = np.zeros((2, n_genes), dtype=bool)
    flags[0, hvg], flags[1, heg] = True, True
    per_gene = pd.DataFrame({
        "pearson": pcc, "spearman": scc, "mse": np.mean((y_pred - y_true) ** 2, axis=0),
        "moran_measured": moran[0], "moran_generated": moran[1], "hvg": flags[0], "heg": flags[1],
    })  # fmt: skip
    return row, per_gene


def _resolve_scale(adata: AnnData, key: str, scale: str | None) -> tuple[str, str]:
    meta = adata.uns.get(key)
    stored = meta.get("params", {}).get("target_scale") if isinstance(meta, Mapping) else None
    native = stored or "log2p1"
    scale = native if scale is None else scale
    check_scale(scale, argument="scale")
    if native not in SCALES:
        raise ValueError(f"`adata.uns[{key!r}]['params']['target_scale']` is {native!r}, not one of {SCALES}.")
    if scale == "log2p1" and native == "log1p_cp10k":
        raise ValueError(
            f"`scale={scale!r}` but the predictions in `adata.obsm[{key!r}]` are on the {native!r} scale "
            f"(`adata.uns[{key!r}]['params']['target_scale']`), which cannot be turned back into counts without "
            "each spot's library size. Leave `scale=None` (or pass 'log1p_cp10k')."
        )
    return scale, native


def _optional_frame(adata: AnnData, key: str, genes: list[str], shape: tuple[int, int]) -> np.ndarray | None:
    frame = adata.obsm.get(key)
    if frame is None:
        return None
    if not isinstance(frame, pd.DataFrame) or not set(genes) <= set(frame.columns):
        raise ValueError(f"`adata.obsm[{key!r}]` must be a DataFrame with the predicted genes as columns.")
    out = frame[genes].to_numpy(dtype=np.float64)
    return out if out.shape == shape else None


def paired_values(
    adata: AnnData,
    key: str,
    genes: Sequence[str],
    *,
    layer: str | None = None,
    scale: str,
    native: str,
    allow_non_integer: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Measured and predicted values of ``genes`` on the evaluation ``scale`` (see :func:`evaluate`).

    Returns
    -------
    ``(measured, predicted, std, samples)``: (n_spots, n_genes) arrays, the predicted s.d. or ``None`` and the
    samples (n_spots, S, n_genes) or ``None``, all on ``scale``. Rows of predicted may hold NaN.
    """
    pred_df = adata.obsm[key]
    genes = list(genes)
    x = adata.layers[layer] if layer is not None else adata.X
    check_counts(x, where=f"`adata.layers[{layer!r}]`" if layer else "`adata.X`", allow_non_integer=allow_non_integer)
    # genes over which "log1p_cp10k" normalises: every measured prediction column (the panel), not only `genes`
    norm_genes = [g for g in pred_df.columns if g in set(adata.var_names)] if scale == "log1p_cp10k" else genes
    sub = x[:, adata.var_names.get_indexer(norm_genes)]
    counts = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    predicted = pred_df[norm_genes].to_numpy(dtype=np.float64)
    std = _optional_frame(adata, f"{key}_std", norm_genes, predicted.shape)
    samples = adata.obsm.get(f"{key}_samples")
    if samples is not None:
        samples = np.asarray(samples, dtype=np.float64)
        cols = pred_df.columns.get_indexer(norm_genes)
        samples = samples[:, :, cols] if samples.ndim == 3 and samples.shape[0] == adata.n_obs else None
    if scale == "log1p_cp10k":
        measured = to_model_scale(counts, "log1p_cp10k")  # library = panel total
        predicted = panel_cp10k(predicted, native)
        samples = None if samples is None else panel_cp10k(samples, native)
        std = None if samples is None else samples.std(axis=1)  # the s.d. does not survive the change of scale
        idx = pd.Index(norm_genes).get_indexer(genes)
        measured, predicted = measured[:, idx], predicted[:, idx]
        std, samples = (None if std is None else std[:, idx]), (None if samples is None else samples[:, :, idx])
    else:
        measured = to_model_scale(counts, "log2p1")
    return measured, predicted, std, samples


def evaluate(
    adata: AnnData,
    *,
    key: str = "hinge",
    layer: str | None = None,
    section_key: str | None = "section",
    genes: Sequence[str] | None = None,
    scale: Scale | None = None,
    top_k: Sequence[int] = (10, 50, 200),
    n_top_genes: int = 50,
    spatial_key: str | None = "spatial",
    n_neighs: int = 6,
    key_added: str | None = None,
    overwrite: bool = False,
    allow_non_integer: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    r"""Score generated expression against the measured counts, per section (:cite:p:`Fang2026`, §7).

    Works for the output of :func:`hinge_sc.tl.generate` and for any method that stores its predictions the
    same way (``obsm[key]``: DataFrame spots × genes; optional ``obsm[key + "_std"]`` and
    ``obsm[key + "_samples"]``; ``uns[key]["params"]["target_scale"]``), e.g. :mod:`hinge_sc.benchmark`.

    **Protocol.** Within each section, per gene: Pearson and Spearman correlation across spots (NaN for genes
    constant in the measurements or the predictions; they are left out of every mean, compare ``n_valid_genes``).
    Per section: PCC-K (mean of the K largest per-gene Pearson values, the HINGE/Stem headline; if fewer than K
    genes are valid, all are averaged); the mean Pearson and Spearman over all valid panel genes; the mean
    Pearson over the ``n_top_genes`` most variable (``pcc_hvg50``) and most expressed (``pcc_heg50``) genes
    of the measured section (Hist2ST/TRIPLEX/BLEEP convention; ties broken by panel order); MSE and MAE over
    spots × genes; the relative variance distance (:func:`~hinge_sc.tl._metrics.relative_variance_distance`);
    co-expression consistency: the correlation of the upper triangles of the gene–gene correlation matrices
    and their normalised Frobenius distance; spatial fidelity: the mean Moran's I of measured and generated
    maps and its correlation across genes (squidpy, ``n_neighs``-nearest-neighbour graph); uncertainty:
    coverage of the central 50% and 90% intervals (from the samples, else Gaussian from the s.d.) and the
    mean per-gene Spearman correlation of the predicted s.d. with the absolute error.

    **Scales.** ``"log2p1"``: measured :math:`\log_2(x+1)` against predictions on that scale.
    ``"log1p_cp10k"``: measured and predicted expression (and samples) are both turned into counts and
    normalised to 10,000 over the panel (all measured prediction columns), :math:`\ln(1 + 10^4 x_g/\sum x)`
    (:func:`~hinge_sc.tl._metrics.panel_cp10k`): this removes the sequencing depth shared by all genes, which
    inflates per-gene correlations on the raw scale, and treats every method the same whatever its training
    scale. Spots with a NaN prediction are left out with a warning.

    Parameters
    ----------
    adata
        AnnData with raw counts and predictions.
    key
        Key of ``obsm`` with the predictions (DataFrame, spots × genes).
    layer
        Layer with raw counts; ``None`` uses ``X``.
    section_key
        Column of ``obs`` with the section of each spot; ``None`` scores all spots as one group ``"all"``.
    genes
        Genes to score; default all prediction columns.
    scale
        Evaluation scale, ``"log2p1"`` or ``"log1p_cp10k"``; default the predictions' scale
        (``uns[key]["params"]["target_scale"]``, else ``"log2p1"``).
    top_k
        The K of PCC-K.
    n_top_genes
        Size of the highly variable / highly expressed gene sets.
    spatial_key
        Key of ``obsm`` with spot coordinates for Moran's I; ``None`` skips the spatial metrics.
    n_neighs
        Neighbours per spot in the graph of Moran's I.
    key_added
        Key of ``uns`` for the results; default ``f"{key}_evaluation"``.
    overwrite
        Replace an existing ``uns[key_added]``.
    allow_non_integer
        Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.

    Returns
    -------
    ``(per_gene, per_section)``. ``per_gene``: tidy DataFrame with columns ``section``, ``gene``, ``pearson``,
    ``spearman``, ``mse``, ``moran_measured``, ``moran_generated``, ``hvg``, ``heg`` (bool: in the top sets).
    ``per_section``: indexed by section, columns ``n_spots``, ``n_genes``, ``n_valid_genes``, ``pcc_mean``,
    ``spearman_mean``, ``pcc_{K}`` for each K, ``pcc_hvg{n}``, ``pcc_heg{n}``, ``mse``, ``mae``, ``rvd``,
    ``coexpr_pcc``, ``coexpr_frobenius``, ``moran_measured``, ``moran_generated``, ``moran_pcc``,
    ``coverage_50``, ``coverage_90``, ``std_error_spearman`` and a last row ``"mean"``: the unweighted mean
    over sections (NaN-aware). Both are also written to ``uns[key_added]`` as
    ``{"per_gene", "per_section", "params"}``.

    Raises
    ------
    KeyError
        If ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate`), genes are not in ``var_names``, or
        ``uns[key_added]`` exists and ``overwrite`` is false.
    ValueError
        If ``adata`` has no spots, ``genes`` is empty, ``scale`` is unknown or cannot be reached from the
        predictions' scale, or the counts are not raw integer counts (unless ``allow_non_integer``).

    Examples
    --------
    >>> per_gene, per_section = hs.tl.evaluate(adata, key="hinge")
    >>> per_section.loc["mean", "pcc_50"]
    >>> hs.tl.evaluate(adata, key="hinge", scale="log1p_cp10k", key_added="hinge_cp10k")
    """
    check_n_obs(adata)
    check_genes_given(genes, argument="genes")
    pred_df = check_prediction_frame(adata, key, argument="key")
    key_added = f"{key}_evaluation" if key_added is None else key_added
    check_key_free(adata.uns, key_added, where="adata.uns", overwrite=overwrite)
    scale, native = _resolve_scale(adata, key, scale)
    top_k = [int(k) for k in top_k]
    if n_top_genes < 1:
        raise ValueError(f"`n_top_genes` must be a positive integer, found {n_top_genes}.")
    genes = list(pred_df.columns) if genes is None else list(genes)
    check_genes(genes, pred_df.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    check_genes(genes, adata.var_names, argument="genes", where="`adata.var_names` (no measured counts)")
    if section_key is not None and section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
    coords = None
    if spatial_key is not None:
        if spatial_key in adata.obsm:
            coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
        else:
            warnings.warn(
                f"`spatial_key={spatial_key!r}` is not in `adata.obsm`: Moran's I is not computed. "
                "Pass the key of the spot coordinates, or `spatial_key=None`.",
                UserWarning,
                stacklevel=2,
            )

    measured, predicted, std, samples = paired_values(
        adata, key, genes, layer=layer, scale=scale, native=native, allow_non_integer=allow_non_integer
    )

    ok = np.isfinite(predicted).all(1)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} spots have NaN predictions in `adata.obsm[{key!r}]`; they are left out.",
            UserWarning,
            stacklevel=2,
        )
    if section_key is None:
        groups = pd.Series("all", index=adata.obs_names)
    else:
        groups = adata.obs[section_key].astype(str)
    sections = list(dict.fromkeys(groups[ok]))
    if "mean" in sections:
        raise ValueError(
            f"A section is named 'mean', which is reserved for the summary row; rename it in `obs[{section_key!r}]`."
        )

    rows, per_gene = {}, []
    for section in sections:
        m = ok & (groups == section).to_numpy()
        rows[section], table = section_metrics(
            measured[m], predicted[m], top_k, n_top_genes=n_top_genes, n_neighs=n_neighs,
            coordinates=None if coords is None else coords[m],
            std=None if std is None else std[m], samples=None if samples is None else samples[m],
        )  # fmt: skip
        per_gene.append(table.assign(section=section, gene=genes))
        for k in top_k:
            if k > rows[section]["n_valid_genes"]:
                logger.info("%s: PCC-%d averages all %d valid genes.", section, k, rows[section]["n_valid_genes"])
    per_section = pd.DataFrame.from_dict(rows, orient="index")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (e.g. no uncertainty) stay NaN
        per_section.loc["mean"] = per_section.mean(numeric_only=True)
    per_section.index.name = "section"
    per_gene_df = pd.concat(per_gene, ignore_index=True)
    per_gene_df = per_gene_df[["section", "gene", *[c for c in per_gene_df.columns if c not in ("section", "gene")]]]
    per_gene_df["section"] = pd.Categorical(per_gene_df["section"], categories=sections)

    uncertainty = "samples" if samples is not None else ("gaussian_std" if std is not None else None)
    adata.uns[key_added] = {
        "per_gene": per_gene_df,
        "per_section": per_section,
        "params": {"key": key, "layer": layer, "section_key": section_key, "scale": scale,
                   "prediction_scale": native, "top_k": top_k, "n_top_genes": n_top_genes, "n_genes": len(genes),
                   "spatial_key": spatial_key if coords is not None else None, "n_neighs": n_neighs,
                   "uncertainty": uncertainty or "none"},  # fmt: skip
    }
    logger.info("Wrote `adata.uns[%r]` (%d sections × %d genes).", key_added, len(sections), len(genes))
    return per_gene_df, per_section
