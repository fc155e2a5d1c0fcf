"""Measured vs generated gene–gene correlation heatmaps: :func:`coexpression`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .._deprecation import renamed_argument
from .._validators import check_genes, check_prediction_frame
from ..pp._spatialdata import resolve_table
from ._utils import save_figure, section_mask

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


def coexpression(
    adata: AnnData | SpatialData,
    genes: Sequence[str] | None = None,
    *,
    table_key: str | None = None,
    key: str = "hinge",
    layer: str | None = None,
    section: str | None = None,
    section_key: str | None = "section",
    scale: str | None = None,
    allow_non_integer: bool = False,
    cluster: bool = True,
    cmap: str = "RdBu_r",
    figsize: tuple[float, float] | None = None,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    library_id: str | None = None,
    **kwargs: Any,
) -> Figure:
    """Heatmaps of the gene–gene correlation of measured and generated expression, side by side.

    Correlations are Pearson across the spots of one section, on the evaluation scale of
    :func:`hinge_sc.tl.evaluate` (``scale``). Genes constant in either are left out. The title gives the
    co-expression consistency (correlation of the upper triangles, :math:`r_{co}`) and the normalised
    Frobenius distance :math:`d_F`, as in :func:`~hinge_sc.tl._metrics.coexpression_consistency`.

    Parameters
    ----------
    adata
        AnnData with measured raw counts and the output of :func:`hinge_sc.tl.generate` (or a baseline).
    table_key
        SpatialData input: the table with the spots (default: the one with ``obsm[key]``, or the only one).
    genes
        Genes to show (default: every prediction gene that is measured).
    key
        Key of ``obsm`` with the predictions.
    layer
        Layer with raw counts; ``None`` uses ``X``.
    section
        Section to use, a value of ``obs[section_key]``; default the first of ``obs[section_key]``.
    section_key
        Column of ``obs`` with sections; ``None`` uses all spots.
    scale
        ``"log2p1"`` or ``"log1p_cp10k"``; default the predictions' scale.
    allow_non_integer
        Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.
    cluster
        Order genes by average-linkage clustering of the measured correlations (same order in both panels).
    cmap
        Diverging colormap (range −1 to 1).
    figsize
        Figure size in inches; default (9, 4.4).
    ax
        Two Axes (measured, generated).
    title
        Figure title; default the section and the scores.
    save
        Path to write the figure to.
    library_id
        Deprecated alias of ``section``.
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.imshow`.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`.

    Raises
    ------
    KeyError
        If ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate`) or genes are not measured and predicted.
    ValueError
        If ``section`` is unknown, fewer than 2 genes vary, ``ax`` is not two Axes, or the counts are not integer
        counts (unless ``allow_non_integer``).

    Examples
    --------
    >>> hs.pl.coexpression(adata, key="hinge", section="C6", save="coexpression.png")
    """
    adata = resolve_table(None, adata, table_key, key=key, argument="adata")
    section = renamed_argument("library_id", library_id, "section", section)
    pred = check_prediction_frame(adata, key, argument="key")
    if genes is None:
        genes = [g for g in pred.columns if g in set(adata.var_names)]
    genes = list(genes)
    check_genes(genes, pred.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    check_genes(genes, adata.var_names, argument="genes", where="`adata.var_names` (no measured counts)")
    corr = _correlations(
        adata, genes, key=key, layer=layer, section=section, section_key=section_key, scale=scale,
        allow_non_integer=allow_non_integer,
    )  # fmt: skip
    fig, axes = _heatmap_axes(ax, figsize)
    order = _cluster_order(corr.measured) if cluster else np.arange(len(corr.genes))
    _draw_heatmaps(fig, axes, corr, order, cmap=cmap, kwargs=kwargs)
    label = f"{corr.section} · " if corr.section else ""
    default = f"{label}co-expression consistency r = {corr.r_co:.2f}, d_F = {corr.d_f:.2f}"
    fig.suptitle(title if title is not None else default)
    save_figure(fig, save)
    return fig


class _Correlations(NamedTuple):
    """Gene–gene correlations of one section, measured and generated, over the genes that vary in both."""

    section: str | None  #: the section shown
    genes: np.ndarray  #: names of the genes that vary, (n_genes,)
    measured: np.ndarray  #: Pearson r of the measurements, (n_genes, n_genes)
    generated: np.ndarray  #: Pearson r of the predictions, (n_genes, n_genes)
    r_co: float  #: co-expression consistency
    d_f: float  #: normalised Frobenius distance


def _correlations(
    adata: AnnData,
    genes: Sequence[str],
    *,
    key: str,
    layer: str | None,
    section: str | None,
    section_key: str | None,
    scale: str | None,
    allow_non_integer: bool,
) -> _Correlations:
    """Measured and generated values of ``genes`` on the evaluation scale, on the section's spots, correlated.

    Spots with a NaN prediction are left out; so are genes constant in either.
    """
    from ..tl._evaluate import paired_values, resolve_scale
    from ..tl._metrics import coexpression_consistency

    scale, native = resolve_scale(adata, key, scale)
    section, mask = section_mask(adata, section, section_key)
    measured, predicted, _, _ = paired_values(
        adata, key, genes, layer=layer, scale=scale, native=native, allow_non_integer=allow_non_integer
    )
    mask &= np.isfinite(predicted).all(1)
    measured, predicted = measured[mask], predicted[mask]
    valid = (np.ptp(measured, axis=0) > 0) & (np.ptp(predicted, axis=0) > 0) if len(measured) > 1 else None
    if valid is None or valid.sum() < 2:
        raise ValueError(f"Fewer than 2 of the {len(genes)} `genes` vary in section {section!r}; pass more genes.")
    c_true = np.corrcoef(measured[:, valid], rowvar=False)
    c_pred = np.corrcoef(predicted[:, valid], rowvar=False)
    r_co, d_f = coexpression_consistency(measured, predicted)
    return _Correlations(section, np.asarray(genes)[valid], c_true, c_pred, r_co, d_f)


def _cluster_order(corr: np.ndarray) -> np.ndarray:
    """Leaf order of the average-linkage clustering of the genes on the distance 1 − ``corr``."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(corr) < 3:
        return np.arange(len(corr))
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def _heatmap_axes(ax: Sequence[Axes] | None, figsize: tuple[float, float] | None) -> tuple[Figure, list[Axes]]:
    """The figure and its two Axes (measured, generated); a new figure when ``ax`` is None."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=figsize or (9.0, 4.4), layout="constrained")
        return fig, list(axes)
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != 2:
        raise ValueError(f"`ax` must be two Axes (measured, generated), found {len(axes)}; or pass `ax=None`.")
    return axes[0].figure, axes


def _draw_heatmaps(
    fig: Figure, axes: Sequence[Axes], corr: _Correlations, order: np.ndarray, *, cmap: str, kwargs: dict[str, Any]
) -> None:
    """Draw both heatmaps in gene ``order`` (gene names as ticks up to 40 genes) and their shared colour bar."""
    kwargs.setdefault("interpolation", "nearest")
    names = corr.genes
    for a, mat, name in zip(axes, (corr.measured, corr.generated), ("measured", "generated"), strict=True):
        im = a.imshow(mat[np.ix_(order, order)], cmap=cmap, vmin=-1, vmax=1, **kwargs)
        a.set_title(name, fontsize="medium")
        if len(names) <= 40:
            a.set_xticks(range(len(names)), names[order], rotation=90, fontsize="x-small")
            a.set_yticks(range(len(names)), names[order], fontsize="x-small")
        else:
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlabel(f"{len(names)} genes")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="Pearson r")
