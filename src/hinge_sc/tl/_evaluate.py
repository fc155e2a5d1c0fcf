from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from .._validators import check_counts, check_genes, check_key_free, check_prediction_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

Scale = Literal["log2p1", "log1p_cp10k"]
_SCALES = ("log2p1", "log1p_cp10k")


def transform_counts(counts: np.ndarray, scale: Scale, library_size: np.ndarray | None = None) -> np.ndarray:
    """Raw counts (n_spots, n_genes) to the model scale.

    ``"log2p1"``: :math:`\\log_2(x + 1)`. ``"log1p_cp10k"``: :math:`\\ln(1 + 10^4 x / L)` with ``L`` the
    library size of each spot, shape (n_spots,) (defaults to the row sums of ``counts``; pass the total over
    all genes when ``counts`` is a gene subset). Spots with ``L = 0`` give 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if scale == "log2p1":
        return np.log2(counts + 1.0)
    if scale == "log1p_cp10k":
        lib = counts.sum(1) if library_size is None else np.asarray(library_size, dtype=np.float64).ravel()
        factor = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)
        return np.log1p(counts * factor[:, None])
    raise ValueError(f"`scale` must be one of {_SCALES}, found {scale!r}.")


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
    if y_true.shape[0] < 2:
        return out
    valid = (np.ptp(y_true, axis=0) > 0) & (np.ptp(y_pred, axis=0) > 0)
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
    finite = np.sort(np.asarray(pcc, dtype=np.float64)[np.isfinite(pcc)])[::-1]
    return float(finite[:k].mean()) if finite.size else float("nan")


def coexpression_consistency(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """Agreement of the gene–gene correlation matrices of measured and predicted expression.

    Using only the genes that vary in both (n_spots, n_genes) arrays, with :math:`C` the gene × gene Pearson
    correlation matrix across spots:

    .. math::

        r_{co} = \\operatorname{corr}\\big(\\operatorname{triu}_1(C_{pred}), \\operatorname{triu}_1(C_{true})\\big),
        \\qquad d_F = \\lVert C_{pred} - C_{true} \\rVert_F / \\lVert C_{true} \\rVert_F .

    Returns
    -------
    ``(r_co, d_F)``; ``r_co`` is NaN with fewer than 3 usable genes, ``d_F`` with fewer than 2.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    valid = (np.ptp(y_true, axis=0) > 0) & (np.ptp(y_pred, axis=0) > 0) if len(y_true) > 1 else np.zeros(0, bool)
    if valid.sum() < 2:
        return float("nan"), float("nan")
    c_true = np.corrcoef(y_true[:, valid], rowvar=False)
    c_pred = np.corrcoef(y_pred[:, valid], rowvar=False)
    frob = float(np.linalg.norm(c_pred - c_true) / np.linalg.norm(c_true))
    iu = np.triu_indices(c_true.shape[0], k=1)
    r = pearson_per_gene(c_true[iu][:, None], c_pred[iu][:, None])[0] if len(iu[0]) > 1 else np.nan
    return float(r), frob


def section_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, top_k: Sequence[int]
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Summary metrics of one section, plus its per-gene Pearson and Spearman."""
    pcc, scc = pearson_per_gene(y_true, y_pred), spearman_per_gene(y_true, y_pred)
    n_valid = int(np.isfinite(pcc).sum())
    coexpr_r, coexpr_f = coexpression_consistency(y_true, y_pred)
    row = {
        "n_spots": int(y_true.shape[0]),
        "n_genes": int(y_true.shape[1]),
        "n_valid_genes": n_valid,
        "pcc_mean": float(np.nanmean(pcc)) if n_valid else np.nan,
        "spearman_mean": float(np.nanmean(scc)) if np.isfinite(scc).any() else np.nan,
        **{f"pcc_{k}": pcc_top_k(pcc, k) for k in top_k},
        "mse": float(np.mean((y_pred - y_true) ** 2)),
        "mae": float(np.mean(np.abs(y_pred - y_true))),
        "coexpr_pcc": coexpr_r,
        "coexpr_frobenius": coexpr_f,
    }
    return row, pcc, scc


def evaluate(
    adata: AnnData,
    *,
    key: str = "hinge",
    layer: str | None = None,
    section_key: str | None = "section",
    genes: Sequence[str] | None = None,
    scale: Scale | None = None,
    top_k: Sequence[int] = (10, 50, 200),
    key_added: str | None = None,
    overwrite: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score generated expression against the measured counts, per section (:cite:p:`Fang2026`, §7).

    Predictions are ``adata.obsm[key]`` (spots × panel genes, as written by :func:`hinge_sc.tl.generate`).
    Measured raw counts (``layer`` or ``X``) are put on the same scale; for ``"log1p_cp10k"`` the library
    size is the total count over **all** genes of the spot. Within each section, per gene: Pearson and
    Spearman correlation across spots (NaN for genes constant in either; they are left out of every mean).
    Per section: PCC-K, the mean of the K largest per-gene Pearson values (if fewer than K genes are valid,
    all valid genes are averaged — compare with ``n_valid_genes``), the mean Pearson and Spearman over valid
    genes, MSE and MAE over spots × genes, and the co-expression consistency
    (:func:`coexpression_consistency`). Spots with a NaN prediction are left out with a warning.

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
        Scale of the predictions: ``"log2p1"`` (:math:`\\log_2(x+1)`) or ``"log1p_cp10k"``. Default
        ``uns[key]["params"]["target_scale"]`` if present, else ``"log2p1"``.
    top_k
        The K of PCC-K.
    key_added
        Key of ``uns`` for the results; default ``f"{key}_evaluation"``.
    overwrite
        Replace an existing ``uns[key_added]``.

    Returns
    -------
    ``(per_gene, per_section)``. ``per_gene``: tidy DataFrame with columns ``section``, ``gene``,
    ``pearson``, ``spearman``. ``per_section``: indexed by section, columns ``n_spots``, ``n_genes``,
    ``n_valid_genes``, ``pcc_mean``, ``spearman_mean``, ``pcc_{K}`` for each K, ``mse``, ``mae``,
    ``coexpr_pcc``, ``coexpr_frobenius``, and a last row ``"mean"``: the unweighted mean over sections.
    Both are also written to ``uns[key_added]`` as ``{"per_gene", "per_section", "params"}``.

    Raises
    ------
    KeyError
        If ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate`), genes are not in ``var_names``, or
        ``uns[key_added]`` exists and ``overwrite`` is false.
    ValueError
        If ``scale`` contradicts ``uns[key]["params"]["target_scale"]`` or the counts are not raw.

    Examples
    --------
    >>> per_gene, per_section = hs.tl.evaluate(adata, key="hinge")
    >>> per_section.loc["mean", "pcc_50"]
    """
    pred_df = check_prediction_frame(adata, key, argument="key")
    key_added = f"{key}_evaluation" if key_added is None else key_added
    check_key_free(adata.uns, key_added, where="adata.uns", overwrite=overwrite)
    meta = adata.uns.get(key)
    stored = meta.get("params", {}).get("target_scale") if isinstance(meta, Mapping) else None
    if scale is None:
        scale = stored or "log2p1"
    elif stored is not None and scale != stored:
        raise ValueError(
            f"`scale={scale!r}` but the predictions in `adata.obsm[{key!r}]` are on the {stored!r} scale "
            f"(`adata.uns[{key!r}]['params']['target_scale']`). Leave `scale=None`."
        )
    if scale not in _SCALES:
        raise ValueError(f"`scale` must be one of {_SCALES}, found {scale!r}.")
    top_k = [int(k) for k in top_k]
    genes = list(pred_df.columns) if genes is None else list(genes)
    check_genes(genes, pred_df.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    check_genes(genes, adata.var_names, argument="genes", where="`adata.var_names` (no measured counts)")

    x = adata.layers[layer] if layer is not None else adata.X
    check_counts(x, where=f"`adata.layers[{layer!r}]`" if layer else "`adata.X`")
    gidx = adata.var_names.get_indexer(genes)
    sub = x[:, gidx]
    counts = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    library = np.asarray(x.sum(1)).ravel()
    measured = transform_counts(counts, scale, library_size=library)
    predicted = pred_df[genes].to_numpy(dtype=np.float64)

    ok = np.isfinite(predicted).all(1)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} spots have NaN predictions in `adata.obsm[{key!r}]`; they are left out.",
            UserWarning,
            stacklevel=2,
        )
    if section_key is None:
        groups = pd.Series("all", index=adata.obs_names)
    elif section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
    else:
        groups = adata.obs[section_key].astype(str)
    sections = list(dict.fromkeys(groups[ok]))
    if "mean" in sections:
        raise ValueError(
            f"A section is named 'mean', which is reserved for the summary row; rename it in `obs[{section_key!r}]`."
        )

    rows, per_gene = {}, []
    for section in sections:
        mask = ok & (groups == section).to_numpy()
        rows[section], pcc, scc = section_metrics(measured[mask], predicted[mask], top_k)
        per_gene.append(pd.DataFrame({"section": section, "gene": genes, "pearson": pcc, "spearman": scc}))
        for k in top_k:
            if k > rows[section]["n_valid_genes"]:
                logger.info("%s: PCC-%d averages all %d valid genes.", section, k, rows[section]["n_valid_genes"])
    per_section = pd.DataFrame.from_dict(rows, orient="index")
    per_section.loc["mean"] = per_section.mean(numeric_only=True)
    per_section.index.name = "section"
    per_gene_df = pd.concat(per_gene, ignore_index=True)
    per_gene_df["section"] = pd.Categorical(per_gene_df["section"], categories=sections)

    adata.uns[key_added] = {
        "per_gene": per_gene_df,
        "per_section": per_section,
        "params": {"key": key, "layer": layer, "section_key": section_key, "scale": scale, "top_k": top_k,
                   "n_genes": len(genes)},  # fmt: skip
    }
    logger.info("Wrote `adata.uns[%r]` (%d sections × %d genes).", key_added, len(sections), len(genes))
    return per_gene_df, per_section
