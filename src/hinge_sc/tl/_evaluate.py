"""Score generated expression against measured counts: :func:`evaluate` (docs/method.md §7)."""

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
from ..pp._spatialdata import resolve_table
from ._metrics import (
    SCALES,
    Scale,
    coexpression_consistency,
    panel_cp10k,
    pcc_top_k,
    pearson_per_gene,
    section_metrics,
    spearman_per_gene,
)
from ._uncertainty import calibration_curve, crps_gaussian, crps_samples, energy_score

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = [
    "calibration_curve",
    "coexpression_consistency",
    "crps_gaussian",
    "crps_samples",
    "energy_score",
    "evaluate",
    "pcc_top_k",
    "pearson_per_gene",
    "section_metrics",
    "spearman_per_gene",
]

logger = logging.getLogger(__name__)


def evaluate(
    adata: AnnData | SpatialData,
    *,
    table_key: str | None = None,
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
    coverage of the central 50% and 90% intervals (from the samples; else from the s.d.: the samples' Student-t
    prediction interval when ``uns[key]["params"]["std_n_samples"]`` says it is the s.d. of that many samples, as
    :func:`hinge_sc.tl.generate` records, a Gaussian one otherwise) and the
    mean per-gene Spearman correlation of the predicted s.d. with the absolute error; proper scoring rules
    (lower is better): the CRPS of each spot and gene, averaged per gene and per section (fair ensemble
    estimator :func:`~hinge_sc.tl._metrics.crps_samples` from the samples, else the closed-form Gaussian CRPS
    from mean and s.d.), and the energy score of each spot over the genes, averaged per section (samples only).
    On ``"log1p_cp10k"`` the samples go through the same transformation as the mean, and the s.d. alone cannot
    change scale, so without samples the uncertainty metrics are NaN there.

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
    table_key
        SpatialData input: the table with the spots (default: the one with ``obsm[key]``, or the only one).
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
    ``spearman``, ``mse``, ``moran_measured``, ``moran_generated``, ``crps``, ``hvg``, ``heg`` (bool: in the top
    sets).
    ``per_section``: indexed by section, columns ``n_spots``, ``n_genes``, ``n_valid_genes``, ``pcc_mean``,
    ``spearman_mean``, ``pcc_{K}`` for each K, ``pcc_hvg{n}``, ``pcc_heg{n}``, ``mse``, ``mae``, ``rvd``,
    ``coexpr_pcc``, ``coexpr_frobenius``, ``moran_measured``, ``moran_generated``, ``moran_pcc``,
    ``coverage_50``, ``coverage_90``, ``std_error_spearman``, ``crps``, ``crps_counts`` (on ``"log2p1"`` with
    samples: the CRPS of the samples as counts against the measured counts), ``energy_score`` and a last row
    ``"mean"``: the unweighted mean over sections (NaN-aware). Both are also written to ``uns[key_added]`` as
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
    adata = resolve_table(None, adata, table_key, key=key, argument="adata")
    check_n_obs(adata)
    check_genes_given(genes, argument="genes")
    pred_df = check_prediction_frame(adata, key, argument="key")
    key_added = f"{key}_evaluation" if key_added is None else key_added
    check_key_free(adata.uns, key_added, where="adata.uns", overwrite=overwrite)
    scale, native = resolve_scale(adata, key, scale)
    top_k = [int(k) for k in top_k]
    if n_top_genes < 1:
        raise ValueError(f"`n_top_genes` must be a positive integer, found {n_top_genes}.")
    genes = _evaluated_genes(adata, pred_df, key, genes)
    groups = _spot_sections(adata, section_key)
    coords = _coordinates(adata, spatial_key)

    values = paired_values(
        adata, key, genes, layer=layer, scale=scale, native=native, allow_non_integer=allow_non_integer
    )
    ok = _scored_spots(values[1], key)
    sections = _section_names(groups, ok, section_key)
    std_n_samples = _std_n_samples(adata, key)
    rows, tables = _score_sections(
        values, groups, ok, sections, coords, top_k=top_k, n_top_genes=n_top_genes, n_neighs=n_neighs, genes=genes,
        scale=scale, std_n_samples=std_n_samples,
    )
    per_gene, per_section = _summarise(rows, tables, sections)

    _, _, std, samples = values
    uncertainty = "samples" if samples is not None else None
    if samples is None and std is not None:
        uncertainty = f"std of {std_n_samples} samples (Student-t)" if std_n_samples else "gaussian_std"
    adata.uns[key_added] = {
        "per_gene": per_gene,
        "per_section": per_section,
        "params": {
            "key": key,
            "layer": layer,
            "section_key": section_key,
            "scale": scale,
            "prediction_scale": native,
            "top_k": top_k,
            "n_top_genes": n_top_genes,
            "n_genes": len(genes),
            "spatial_key": spatial_key if coords is not None else None,
            "n_neighs": n_neighs,
            "uncertainty": uncertainty or "none",
        },
    }
    logger.info("Wrote `adata.uns[%r]` (%d sections × %d genes).", key_added, len(sections), len(genes))
    return per_gene, per_section


def resolve_scale(adata: AnnData, key: str, scale: str | None) -> tuple[str, str]:
    """The evaluation scale and the predictions' own scale (``uns[key]["params"]["target_scale"]``, else log2p1).

    Raises
    ------
    ValueError
        If ``scale`` is unknown, the stored scale is unknown, or ``scale`` cannot be reached from it.
    """
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


def _std_n_samples(adata: AnnData, key: str) -> int | None:
    """How many samples ``obsm[key + "_std"]`` is the s.d. of (``uns[key]["params"]["std_n_samples"]``), if recorded."""
    params = adata.uns.get(key, {}).get("params", {}) if isinstance(adata.uns.get(key), dict) else {}
    n = params.get("std_n_samples") if isinstance(params, dict) else None
    return int(n) if n is not None and int(n) >= 2 else None


def _optional_frame(adata: AnnData, key: str, genes: list[str], shape: tuple[int, int]) -> np.ndarray | None:
    """``obsm[key][genes]`` as floats, or ``None`` when absent or of another shape than ``shape``."""
    frame = adata.obsm.get(key)
    if frame is None:
        return None
    if not isinstance(frame, pd.DataFrame) or not set(genes) <= set(frame.columns):
        raise ValueError(f"`adata.obsm[{key!r}]` must be a DataFrame with the predicted genes as columns.")
    out = frame[genes].to_numpy(dtype=np.float64)
    return out if out.shape == shape else None


def _evaluated_genes(adata: AnnData, pred_df: pd.DataFrame, key: str, genes: Sequence[str] | None) -> list[str]:
    """The genes to score: ``genes``, or every prediction column; each must be predicted and measured."""
    genes = list(pred_df.columns) if genes is None else list(genes)
    check_genes(genes, pred_df.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    check_genes(genes, adata.var_names, argument="genes", where="`adata.var_names` (no measured counts)")
    return genes


def _spot_sections(adata: AnnData, section_key: str | None) -> pd.Series:
    """The section of each spot, as strings; one group ``"all"`` when ``section_key`` is ``None``."""
    if section_key is None:
        return pd.Series("all", index=adata.obs_names)
    if section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
    return adata.obs[section_key].astype(str)


def _coordinates(adata: AnnData, spatial_key: str | None) -> np.ndarray | None:
    """Spot centres (n_spots, 2) for Moran's I; ``None`` (with a warning when the key is missing) skips it."""
    if spatial_key is None:
        return None
    if spatial_key not in adata.obsm:
        warnings.warn(
            f"`spatial_key={spatial_key!r}` is not in `adata.obsm`: Moran's I is not computed. "
            "Pass the key of the spot coordinates, or `spatial_key=None`.",
            UserWarning,
            stacklevel=3,
        )
        return None
    return np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]


def _scored_spots(predicted: np.ndarray, key: str) -> np.ndarray:
    """Mask of the spots with a finite prediction of every gene; warns about the others, which are left out."""
    ok = np.isfinite(predicted).all(1)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} spots have NaN predictions in `adata.obsm[{key!r}]`; they are left out.",
            UserWarning,
            stacklevel=3,
        )
    return ok


def _section_names(groups: pd.Series, ok: np.ndarray, section_key: str | None) -> list[str]:
    """The sections that have scored spots, in order of appearance (``"mean"`` is reserved for the summary)."""
    sections = list(dict.fromkeys(groups[ok]))
    if "mean" in sections:
        raise ValueError(
            f"A section is named 'mean', which is reserved for the summary row; rename it in `obs[{section_key!r}]`."
        )
    return sections


def _score_sections(
    values: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
    groups: pd.Series,
    ok: np.ndarray,
    sections: Sequence[str],
    coords: np.ndarray | None,
    *,
    top_k: Sequence[int],
    n_top_genes: int,
    n_neighs: int,
    genes: Sequence[str],
    scale: str,
    std_n_samples: int | None = None,
) -> tuple[dict[str, dict], list[pd.DataFrame]]:
    """Run :func:`section_metrics` on the scored spots of each section.

    Returns
    -------
    ``(rows, tables)``: the summary row of each section (by name) and its per-gene table, with ``section`` and
    ``gene`` columns added.
    """
    measured, predicted, std, samples = values
    rows, tables = {}, []
    for section in sections:
        m = ok & (groups == section).to_numpy()
        rows[section], table = section_metrics(
            measured[m], predicted[m], top_k, n_top_genes=n_top_genes, n_neighs=n_neighs,
            coordinates=None if coords is None else coords[m],
            std=None if std is None else std[m], samples=None if samples is None else samples[m], scale=scale,
            std_n_samples=std_n_samples,
        )  # fmt: skip
        tables.append(table.assign(section=section, gene=list(genes)))
        for k in top_k:
            if k > rows[section]["n_valid_genes"]:
                logger.info("%s: PCC-%d averages all %d valid genes.", section, k, rows[section]["n_valid_genes"])
    return rows, tables


def _summarise(
    rows: dict[str, dict], tables: Sequence[pd.DataFrame], sections: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy per-gene table (``section``, ``gene`` first) and the per-section table with its ``"mean"`` row."""
    per_section = pd.DataFrame.from_dict(rows, orient="index")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (e.g. no uncertainty) stay NaN
        per_section.loc["mean"] = per_section.mean(numeric_only=True)
    per_section.index.name = "section"
    per_gene = pd.concat(tables, ignore_index=True)
    per_gene = per_gene[["section", "gene", *[c for c in per_gene.columns if c not in ("section", "gene")]]]
    per_gene["section"] = pd.Categorical(per_gene["section"], categories=list(sections))
    return per_gene, per_section
