"""Spatial maps of measured and generated expression, and of the uncertainty, on one section: :func:`spatial_genes`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy import sparse

from .._deprecation import renamed_argument
from .._scales import to_model_scale
from .._validators import check_genes, check_prediction_frame
from ..pp._spatialdata import resolve_table
from ._utils import AxesList, add_scalebar, finish, scale_label, section_mask

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import pandas as pd
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.collections import Collection
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

_KINDS = ("measured", "generated", "uncertainty")

#: Longest side, in pixels, of the H&E drawn under a panel (larger crops are subsampled: drawing stays fast).
MAX_IMAGE_SIDE = 800


#: Percentiles of the joint measured and generated values that bound their shared colour range by default.
ROBUST_RANGE = (1.0, 99.0)

def spatial_genes(
    adata: AnnData | SpatialData,
    genes: str | Sequence[str],
    *,
    table_key: str | None = None,
    key: str = "hinge",
    layer: str | None = None,
    section: str | None = None,
    section_key: str | None = "section",
    spatial_key: str = "spatial",
    show_std: bool = True,
    img: bool = True,
    ncols: int | None = None,
    cmap: str = "viridis",
    size: float | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    library_id: str | None = None,
    img_alpha: float = 1.0,
    outline: bool | str = False,
    scalebar: bool | float = True,
    show: bool | None = None,
    **kwargs: Any,
) -> list[Axes]:
    r"""Plot measured, generated and uncertainty maps of genes on one section.

    Each gene gets a block of panels in a compact (constrained) layout: **measured** (the counts of
    ``layer``/``X`` on the scale of the predictions, ``uns[key]["params"]["target_scale"]``, default
    :math:`\log_2(x+1)`; omitted when the gene is not in ``var_names``), **generated** (``obsm[key][gene]``) and
    **uncertainty** (``obsm[key + "_std"][gene]``, when present and ``show_std``). Measured and generated share one
    colour scale, and one colour bar, per gene. The H&E image (``uns["spatial"][section]["images"]["hires"]``)
    is drawn underneath when available.

    Parameters
    ----------
    adata
        AnnData with the output of :func:`hinge_sc.tl.generate`.
    table_key
        SpatialData input: the table with the spots (default: the one with ``obsm[key]``, or the only one).
    genes
        One gene or a list; all must be columns of ``obsm[key]``.
    key
        Key of ``obsm`` with the generated expression (DataFrame, spots × genes).
    layer
        Layer with the measured raw counts; ``None`` uses ``X``.
    section
        Section to plot, a value of ``obs[section_key]``; one at a time. Default: the first section of
        ``obs[section_key]`` (category order).
    section_key
        Column of ``obs`` with the section of each spot; ``None`` plots all spots.
    spatial_key
        Key of ``obsm`` with the spot centres in full-resolution pixels, shape (n_spots, 2).
    show_std
        Add the uncertainty panel.
    img
        Draw the H&E image underneath (coordinates × ``tissue_hires_scalef``).
    ncols
        Genes per row of the figure (default 1: one row per gene).
    cmap
        Colormap.
    size
        Spot diameter as a multiple of ``spot_diameter_fullres`` (default 1; without it, 0.9 × the median
        distance to the nearest spot).
    figsize
        Figure size in inches; default about 3.1 in wide per panel, the height following the section's shape.
    ax
        Axes to draw into: one Axes when a single panel is drawn, else a sequence with one Axes per panel
        (gene-major order, ``measured``/``generated``/``uncertainty`` within a gene, empty slots included).
    title
        Figure title; default the section id.
    save
        Path to write the figure to (format from the suffix).
    library_id
        Deprecated alias of ``section``.
    img_alpha
        Opacity of the H&E image underneath (0–1).
    outline
        Draw each spot's outline: ``True`` (black) or a colour.
    scalebar
        Draw a scale bar in µm on the first panel (``True``: a round length; a number: that many µm). Needs the
        slide's ``scalefactors["microns_per_pixel"]`` (µm per full-resolution px); skipped without it.
    show
        Show the figure (:func:`matplotlib.pyplot.show`); ``None``: when matplotlib is interactive and nothing is
        saved, like scanpy.
    **kwargs
        Passed to :class:`matplotlib.collections.EllipseCollection` (``vmin``/``vmax`` set the colour range
        of the measured and generated panels; default: the 1st–99th percentile of their joint values, shared by
        both so that levels compare).

    Returns
    -------
    The list of Axes, one per panel (gene-major, as ``ax``); ``result[0].figure`` is the figure. The colour bars are
    labelled with the unit of the scale (e.g. ``log2(count+1)``; ``s.d. of …`` for the uncertainty).

    Raises
    ------
    KeyError
        If ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate`) or genes are not in it.
    ValueError
        If ``section`` is unknown or ``ax`` has the wrong number of Axes.

    Examples
    --------
    >>> fig = hs.pl.spatial_genes(adata, ["GNAS", "ERBB2"], section="C2", save="genes.png")
    """
    adata = resolve_table(None, adata, table_key, key=key, argument="adata")
    section = renamed_argument("library_id", library_id, "section", section)
    pred = check_prediction_frame(adata, key, argument="key")
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty; pass at least one gene of the predictions.")
    check_genes(genes, pred.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    if spatial_key not in adata.obsm:
        raise KeyError(f"`spatial_key={spatial_key!r}` is not in `adata.obsm`; pass the key of the spot coordinates.")
    section, mask = section_mask(adata, section, section_key)
    view = _section_view(adata, section, mask, spatial_key=spatial_key, img=img, size=size)
    unit = scale_label(_target_scale(adata, key))
    if outline:
        kwargs.setdefault("edgecolors", "black" if outline is True else outline)
        kwargs.setdefault("linewidths", 0.4)
    panels = _panel_values(adata, pred, genes, mask, key=key, layer=layer, show_std=show_std)
    kinds = [k for k in _KINDS if any(k in p for p in panels.values())]
    fig, axes = _panel_axes(ax, len(genes), kinds, ncols=ncols, figsize=figsize, view=view)
    vmin, vmax = kwargs.pop("vmin", None), kwargs.pop("vmax", None)
    for g, gene in enumerate(genes):
        block = axes[g * len(kinds) : (g + 1) * len(kinds)]
        _draw_gene(
            fig, block, gene, panels[gene], kinds, view, cmap=cmap, vmin=vmin, vmax=vmax, unit=unit,
            img_alpha=img_alpha, kwargs=kwargs,
        )  # fmt: skip
    for a in axes[len(genes) * len(kinds) :]:
        a.set_axis_off()
    if scalebar and view.um_per_px:
        first = next(a for a in axes if a.axison)
        add_scalebar(first, view.um_per_px, length_um=None if scalebar is True else float(scalebar))
    fig.suptitle(title if title is not None else (section or ""))
    finish(fig, save, show)
    return AxesList(axes)


class _SectionView(NamedTuple):
    """The spots of one section as drawn, in pixels of the image underneath (full resolution without one)."""

    xy: np.ndarray  #: spot centres, (n_spots, 2)
    diam: float  #: spot diameter
    image: np.ndarray | None  #: the H&E image (``hires``), or ``None``
    um_per_px: float | None  #: µm per drawn pixel (``microns_per_pixel`` / image scale), ``None`` when unknown


def _section_view(
    adata: AnnData, section: str | None, mask: np.ndarray, *, spatial_key: str, img: bool, size: float | None
) -> _SectionView:
    """The spot centres and diameter of the section in pixels of its ``hires`` H&E image, and the image if drawn."""
    lib = adata.uns.get("spatial", {}).get(section) if section is not None else None
    image, scale = None, 1.0
    if img and lib is not None and "hires" in lib.get("images", {}):
        image, scale = lib["images"]["hires"], float(lib["scalefactors"]["tissue_hires_scalef"])
    xy = np.asarray(adata.obsm[spatial_key], dtype=float)[mask, :2] * scale
    diam = _spot_diameter(xy, lib, scale) * (1.0 if size is None else size)
    mpp = (lib or {}).get("scalefactors", {}).get("microns_per_pixel")
    return _SectionView(xy, diam, image, float(mpp) / scale if mpp else None)


def _target_scale(adata: AnnData, key: str) -> str:
    """The scale of the predictions, ``uns[key]["params"]["target_scale"]`` (default ``"log2p1"``)."""
    meta = adata.uns.get(key)
    return meta.get("params", {}).get("target_scale", "log2p1") if isinstance(meta, Mapping) else "log2p1"


def _spot_diameter(xy: np.ndarray, lib: Mapping | None, scale: float) -> float:
    """Spot diameter in drawn pixels: ``spot_diameter_fullres`` × ``scale``, else 0.9 × the nearest-spot distance."""
    diam = (lib or {}).get("scalefactors", {}).get("spot_diameter_fullres")
    if diam:
        return float(diam) * scale
    if len(xy) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(xy).query(xy, k=2)
    return 0.9 * float(np.median(dist[:, 1]))


def _panel_values(
    adata: AnnData,
    pred: pd.DataFrame,
    genes: Sequence[str],
    mask: np.ndarray,
    *,
    key: str,
    layer: str | None,
    show_std: bool,
) -> dict[str, dict[str, np.ndarray]]:
    """The values of each panel of each gene on the section's spots, by gene and then by kind.

    ``"measured"`` (the counts on the predictions' scale; only for genes in ``var_names``), ``"generated"``
    (``obsm[key]``) and ``"uncertainty"`` (``obsm[key + "_std"]``, when present and ``show_std``).
    """
    std = adata.obsm.get(f"{key}_std") if show_std else None
    target = _target_scale(adata, key)
    x = adata.layers[layer] if layer is not None else adata.X
    panels: dict[str, dict[str, np.ndarray]] = {}
    for gene in genes:
        p: dict[str, np.ndarray] = {}
        if adata.n_vars and gene in adata.var_names:
            p["measured"] = _measured(x, adata.var_names.get_loc(gene), target)[mask]
        p["generated"] = pred[gene].to_numpy(dtype=float)[mask]
        if std is not None and hasattr(std, "columns") and gene in std.columns:
            p["uncertainty"] = std[gene].to_numpy(dtype=float)[mask]
        panels[gene] = p
    return panels


def _measured(x: Any, j: int, target: str) -> np.ndarray:
    """Column ``j`` of the counts ``x`` on the ``target`` scale (library size: each spot's total), shape (n_spots,)."""
    col = x[:, j]
    col = col.toarray() if sparse.issparse(col) else np.asarray(col).reshape(-1, 1)
    library = np.asarray(x.sum(1)).ravel() if target == "log1p_cp10k" else None
    return to_model_scale(col, target, library_size=library).ravel()


def _panel_axes(
    ax: Axes | Sequence[Axes] | None,
    n_genes: int,
    kinds: Sequence[str],
    *,
    ncols: int | None,
    figsize: tuple[float, float] | None,
    view: _SectionView,
) -> tuple[Figure, list[Axes]]:
    """The figure and its Axes in gene-major order (one Axes per kind within a gene); a new grid when ``ax`` is None.

    A new grid has ``ncols`` genes per row; its slots past the last gene are kept (the caller blanks them).
    """
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        needed = n_genes * len(kinds)
        if len(axes) != needed:
            raise ValueError(
                f"`ax` has {len(axes)} Axes but {n_genes} genes × {len(kinds)} panels ({', '.join(kinds)}) need "
                f"{needed}. Pass that many Axes, or `ax=None`."
            )
        return axes[0].figure, axes
    ncols = 1 if ncols is None else max(1, min(int(ncols), n_genes))
    nrows = -(-n_genes // ncols)
    span = np.ptp(view.xy, axis=0) + 1.2 * view.diam if len(view.xy) else np.ones(2)
    panel_h = 2.8 * float(np.clip(span[1] / max(span[0], 1e-9), 0.5, 2.0)) + 0.35  # + title
    figsize = figsize or (3.1 * ncols * len(kinds), panel_h * nrows + 0.4)
    fig, axes = plt.subplots(nrows, ncols * len(kinds), figsize=figsize, squeeze=False, layout="constrained")
    return fig, list(axes.ravel())


def _draw_gene(
    fig: Figure,
    axes: Sequence[Axes],
    gene: str,
    values: Mapping[str, np.ndarray],
    kinds: Sequence[str],
    view: _SectionView,
    *,
    cmap: str,
    vmin: float | None,
    vmax: float | None,
    unit: str,
    img_alpha: float,
    kwargs: dict[str, Any],
) -> None:
    """Draw the panels of one gene, one Axes per kind of ``kinds``, and their colour bars (labelled with ``unit``).

    Measured and generated share one colour range (``vmin``/``vmax``; default: the 1st–99th percentile of their
    joint values, a robust range so that one outlying spot does not wash out both maps; values beyond it take the
    end colours); the uncertainty has its own. A kind the gene lacks leaves its Axes blank.
    """
    shared = np.concatenate([values[k] for k in ("measured", "generated") if k in values])
    lo = np.nanpercentile(shared, ROBUST_RANGE[0]) if vmin is None else vmin
    hi = np.nanpercentile(shared, ROBUST_RANGE[1]) if vmax is None else vmax
    if not hi > lo:  # a constant map
        lo, hi = (np.nanmin(shared), np.nanmax(shared)) if vmin is None and vmax is None else (lo, hi)
    drawn: dict[str, tuple[Axes, Collection]] = {}
    for a, kind in zip(axes, kinds, strict=True):
        if kind not in values:
            a.set_axis_off()
            continue
        lims = (lo, hi) if kind != "uncertainty" else (np.nanmin(values[kind]), np.nanmax(values[kind]))
        coll = _draw(
            a, view, values[kind], cmap=cmap, vmin=lims[0], vmax=lims[1], title=f"{gene} {kind}",
            img_alpha=img_alpha, kwargs=kwargs,
        )  # fmt: skip
        drawn[kind] = (a, coll)
    _colour_bars(fig, drawn, unit)


def _colour_bars(fig: Figure, drawn: Mapping[str, tuple[Axes, Collection]], unit: str) -> None:
    """One colour bar for the shared measured/generated scale (``unit``), one (``"s.d. of unit"``) for the s.d."""
    shared_axes = [drawn[k][0] for k in ("measured", "generated") if k in drawn]
    if shared_axes:
        coll = drawn.get("generated", drawn.get("measured"))[1]
        fig.colorbar(coll, ax=shared_axes, shrink=0.8, pad=0.02, label=unit)
    if "uncertainty" in drawn:
        fig.colorbar(drawn["uncertainty"][1], ax=drawn["uncertainty"][0], shrink=0.8, pad=0.02, label=f"s.d. of {unit}")


def _draw(
    ax: Axes,
    view: _SectionView,
    values: np.ndarray,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    title: str,
    img_alpha: float = 1.0,
    kwargs: Mapping[str, Any],
) -> Collection:
    """Draw one panel: the H&E underneath (if any) and one disc per spot coloured by ``values`` (n_spots,)."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize

    xy, diam = view.xy, view.diam
    pad = 0.6 * diam
    if view.image is not None:
        _show_image(ax, view.image, xy, pad, alpha=img_alpha)
    n = len(xy)
    coll = EllipseCollection(
        np.full(n, diam), np.full(n, diam), np.zeros(n), units="xy", offsets=xy, offset_transform=ax.transData,
        cmap=cmap, norm=Normalize(vmin=vmin, vmax=vmax), **kwargs,
    )  # fmt: skip
    coll.set_array(np.asarray(values, dtype=float))
    ax.add_collection(coll)
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].max() + pad, xy[:, 1].min() - pad)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="medium")
    return coll


def _show_image(ax: Axes, image: np.ndarray, xy: np.ndarray, pad: float, *, alpha: float = 1.0) -> None:
    """Draw the part of ``image`` under the spots, subsampled to at most :data:`MAX_IMAGE_SIDE` px, in pixel units."""
    h, w = image.shape[:2]
    c0, c1 = (int(np.clip(v, 0, w)) for v in (np.floor(xy[:, 0].min() - pad), np.ceil(xy[:, 0].max() + pad) + 1))
    r0, r1 = (int(np.clip(v, 0, h)) for v in (np.floor(xy[:, 1].min() - pad), np.ceil(xy[:, 1].max() + pad) + 1))
    if c1 <= c0 or r1 <= r0:
        return
    step = max(1, int(np.ceil(max(c1 - c0, r1 - r0) / MAX_IMAGE_SIDE)))
    crop = image[r0:r1:step, c0:c1:step]
    extent = (c0 - 0.5, c0 + crop.shape[1] * step - 0.5, r0 + crop.shape[0] * step - 0.5, r0 - 0.5)
    ax.imshow(crop, extent=extent, alpha=alpha)
