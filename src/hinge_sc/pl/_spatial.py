from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from .._scales import to_model_scale
from .._validators import check_genes, check_prediction_frame

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_KINDS = ("measured", "generated", "uncertainty")


def _library_mask(
    adata: AnnData, library_id: str | None, section_key: str | None
) -> tuple[str | None, np.ndarray]:
    spatial = adata.uns.get("spatial", {})
    if section_key is None or section_key not in adata.obs:
        if section_key is not None:
            raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
        if library_id is None and len(spatial) == 1:
            library_id = next(iter(spatial))
        return library_id, np.ones(adata.n_obs, dtype=bool)
    col = adata.obs[section_key].astype(str)
    present = list(dict.fromkeys(col))
    if library_id is None:
        cats = adata.obs[section_key].cat.categories if hasattr(adata.obs[section_key], "cat") else present
        library_id = next(str(c) for c in cats if str(c) in present)
    elif library_id not in present:
        raise ValueError(f"`library_id={library_id!r}` is not in `adata.obs[{section_key!r}]`; choose from {present}.")
    return library_id, (col == library_id).to_numpy()


def _spot_diameter(xy: np.ndarray, lib: Mapping | None, scale: float) -> float:
    diam = (lib or {}).get("scalefactors", {}).get("spot_diameter_fullres")
    if diam:
        return float(diam) * scale
    if len(xy) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(xy).query(xy, k=2)
    return 0.9 * float(np.median(dist[:, 1]))


#: Longest side, in pixels, of the H&E drawn under a panel (larger crops are subsampled: drawing stays fast).
MAX_IMAGE_SIDE = 800


def _show_image(ax: Axes, image: np.ndarray, xy: np.ndarray, pad: float) -> None:
    """Draw the part of ``image`` under the spots, subsampled to at most :data:`MAX_IMAGE_SIDE` px, in pixel units."""
    h, w = image.shape[:2]
    c0, c1 = (int(np.clip(v, 0, w)) for v in (np.floor(xy[:, 0].min() - pad), np.ceil(xy[:, 0].max() + pad) + 1))
    r0, r1 = (int(np.clip(v, 0, h)) for v in (np.floor(xy[:, 1].min() - pad), np.ceil(xy[:, 1].max() + pad) + 1))
    if c1 <= c0 or r1 <= r0:
        return
    step = max(1, int(np.ceil(max(c1 - c0, r1 - r0) / MAX_IMAGE_SIDE)))
    crop = image[r0:r1:step, c0:c1:step]
    extent = (c0 - 0.5, c0 + crop.shape[1] * step - 0.5, r0 + crop.shape[0] * step - 0.5, r0 - 0.5)
    ax.imshow(crop, extent=extent)


def _draw(ax: Axes, xy: np.ndarray, values: np.ndarray, diam: float, image, *, cmap, vmin, vmax, title, kwargs):
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize

    pad = 0.6 * diam
    if image is not None:
        _show_image(ax, image, xy, pad)
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


def spatial_genes(
    adata: AnnData,
    genes: str | Sequence[str],
    *,
    key: str = "hinge",
    layer: str | None = None,
    library_id: str | None = None,
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
    **kwargs: Any,
) -> Figure:
    r"""Plot measured, generated and uncertainty maps of genes on one section.

    Each gene gets a block of panels in a compact (constrained) layout: **measured** (the counts of
    ``layer``/``X`` on the scale of the predictions, ``uns[key]["params"]["target_scale"]``, default
    :math:`\log_2(x+1)`; omitted when the gene is not in ``var_names``), **generated** (``obsm[key][gene]``) and
    **uncertainty** (``obsm[key + "_std"][gene]``, when present and ``show_std``). Measured and generated share one
    colour scale, and one colour bar, per gene. The H&E image (``uns["spatial"][library_id]["images"]["hires"]``)
    is drawn underneath when available.

    Parameters
    ----------
    adata
        AnnData with the output of :func:`hinge_sc.tl.generate`.
    genes
        One gene or a list; all must be columns of ``obsm[key]``.
    key
        Key of ``obsm`` with the generated expression (DataFrame, spots × genes).
    layer
        Layer with the measured raw counts; ``None`` uses ``X``.
    library_id
        Section to plot; one at a time. Default: the first section of ``obs[section_key]`` (category order).
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
    **kwargs
        Passed to :class:`matplotlib.collections.EllipseCollection` (``vmin``/``vmax`` set the colour range
        of the measured and generated panels).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`.

    Raises
    ------
    KeyError
        If ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate`) or genes are not in it.
    ValueError
        If ``library_id`` is unknown or ``ax`` has the wrong number of Axes.

    Examples
    --------
    >>> fig = hs.pl.spatial_genes(adata, ["GNAS", "ERBB2"], library_id="C2", save="genes.png")
    """
    import matplotlib.pyplot as plt


    pred = check_prediction_frame(adata, key, argument="key")
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty; pass at least one gene of the predictions.")
    check_genes(genes, pred.columns, argument="genes", where=f"the predictions `adata.obsm[{key!r}]`")
    if spatial_key not in adata.obsm:
        raise KeyError(f"`spatial_key={spatial_key!r}` is not in `adata.obsm`; pass the key of the spot coordinates.")
    std = adata.obsm.get(f"{key}_std") if show_std else None
    library_id, mask = _library_mask(adata, library_id, section_key)
    lib = adata.uns.get("spatial", {}).get(library_id) if library_id is not None else None
    image, scale = None, 1.0
    if img and lib is not None and "hires" in lib.get("images", {}):
        image, scale = lib["images"]["hires"], float(lib["scalefactors"]["tissue_hires_scalef"])
    xy = np.asarray(adata.obsm[spatial_key], dtype=float)[mask, :2] * scale
    diam = _spot_diameter(xy, lib, scale) * (1.0 if size is None else size)

    meta = adata.uns.get(key)
    target = meta.get("params", {}).get("target_scale", "log2p1") if isinstance(meta, Mapping) else "log2p1"
    x = adata.layers[layer] if layer is not None else adata.X
    panels: dict[str, dict[str, np.ndarray]] = {}
    for gene in genes:
        p: dict[str, np.ndarray] = {}
        if adata.n_vars and gene in adata.var_names:
            col = x[:, adata.var_names.get_loc(gene)]
            col = col.toarray() if sparse.issparse(col) else np.asarray(col).reshape(-1, 1)
            library = np.asarray(x.sum(1)).ravel() if target == "log1p_cp10k" else None
            p["measured"] = to_model_scale(col, target, library_size=library).ravel()[mask]
        p["generated"] = pred[gene].to_numpy(dtype=float)[mask]
        if std is not None and hasattr(std, "columns") and gene in std.columns:
            p["uncertainty"] = std[gene].to_numpy(dtype=float)[mask]
        panels[gene] = p
    kinds = [k for k in _KINDS if any(k in p for p in panels.values())]

    ncols = 1 if ncols is None else max(1, min(int(ncols), len(genes)))
    nrows = -(-len(genes) // ncols)
    n_axes = nrows * ncols * len(kinds)
    if ax is None:
        span = np.ptp(xy, axis=0) + 1.2 * diam if len(xy) else np.ones(2)
        panel_h = 2.8 * float(np.clip(span[1] / max(span[0], 1e-9), 0.5, 2.0)) + 0.35  # + title
        figsize = figsize or (3.1 * ncols * len(kinds), panel_h * nrows + 0.4)
        fig, axes = plt.subplots(nrows, ncols * len(kinds), figsize=figsize, squeeze=False, layout="constrained")
        axes = list(axes.ravel())
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        needed = len(genes) * len(kinds)
        if len(axes) != needed:
            raise ValueError(
                f"`ax` has {len(axes)} Axes but {len(genes)} genes × {len(kinds)} panels ({', '.join(kinds)}) need "
                f"{needed}. Pass that many Axes, or `ax=None`."
            )
        fig = axes[0].figure
        n_axes = needed
    vmin, vmax = kwargs.pop("vmin", None), kwargs.pop("vmax", None)
    for g, gene in enumerate(genes):
        shared = np.concatenate([panels[gene][k] for k in ("measured", "generated") if k in panels[gene]])
        lo = np.nanmin(shared) if vmin is None else vmin
        hi = np.nanmax(shared) if vmax is None else vmax
        drawn: dict[str, tuple] = {}
        for j, kind in enumerate(kinds):
            a = axes[g * len(kinds) + j]
            if kind not in panels[gene]:
                a.set_axis_off()
                continue
            values = panels[gene][kind]
            lims = (lo, hi) if kind != "uncertainty" else (np.nanmin(values), np.nanmax(values))
            coll = _draw(a, xy, values, diam, image, cmap=cmap, vmin=lims[0], vmax=lims[1], title=f"{gene} {kind}",
                         kwargs=kwargs)  # fmt: skip
            drawn[kind] = (a, coll)
        # one colour bar for the shared measured/generated scale, one for the uncertainty
        shared_axes = [drawn[k][0] for k in ("measured", "generated") if k in drawn]
        if shared_axes:
            fig.colorbar(drawn.get("generated", drawn.get("measured"))[1], ax=shared_axes, shrink=0.8, pad=0.02)
        if "uncertainty" in drawn:
            fig.colorbar(drawn["uncertainty"][1], ax=drawn["uncertainty"][0], shrink=0.8, pad=0.02, label="s.d.")
    for a in axes[len(genes) * len(kinds) : n_axes]:
        a.set_axis_off()
    fig.suptitle(title if title is not None else (library_id or ""))
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
        logger.info("Saved the figure to %s.", save)
    return fig
