"""Per-gene score distributions of several methods: :func:`gene_scores`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..pp._spatialdata import resolve_table
from ._utils import finish

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

_KINDS = ("rank", "ecdf", "box")


def _per_gene_table(data: AnnData | pd.DataFrame, keys: Sequence[str] | None, method_key: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        if method_key not in data.columns:
            raise KeyError(f"`method_key={method_key!r}` is not a column of the table; add a column naming the method.")
        return data if keys is None else data[data[method_key].isin(keys)]
    if keys is None:
        keys = [k.removesuffix("_evaluation") for k, v in data.uns.items()
                if isinstance(v, Mapping) and "per_gene" in v]  # fmt: skip
        if not keys:
            raise KeyError("`adata.uns` holds no evaluation; run `hs.tl.evaluate(adata, key=...)` first.")
    tables = []
    for key in keys:
        entry = data.uns.get(key) if isinstance(data.uns.get(key), Mapping) and "per_gene" in data.uns[key] else None
        entry = entry or data.uns.get(f"{key}_evaluation")
        if not isinstance(entry, Mapping) or "per_gene" not in entry:
            raise KeyError(
                f"No evaluation of `{key!r}` in `adata.uns` (looked for {key!r} and {key + '_evaluation'!r}); "
                f"run `hs.tl.evaluate(adata, key={key!r})` first."
            )
        tables.append(pd.DataFrame(entry["per_gene"]).assign(**{method_key: key}))
    return pd.concat(tables, ignore_index=True)


def gene_scores(
    data: AnnData | SpatialData | pd.DataFrame,
    keys: str | Sequence[str] | None = None,
    *,
    table_key: str | None = None,
    metric: str = "pearson",
    kind: Literal["rank", "ecdf", "box"] = "rank",
    method_key: str = "method",
    section: str | None = None,
    top_k: int = 50,
    palette: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    show: bool | None = None,
    **kwargs: Any,
) -> Axes:
    """Distribution of a per-gene score (default Pearson r) for several methods, overlaid.

    Each method's per-gene values are averaged over sections (and seeds, and any other rows of the same gene)
    unless ``section`` picks one. ``"rank"``: values sorted from best to worst against their rank, so PCC-K is
    the mean of the first K points (marked by a dotted line at ``top_k``); ``"ecdf"``: empirical cumulative
    distribution; ``"box"``: one box per method (methods without a finite value are left out). The legend gives
    each method's mean and top-``top_k`` mean.

    Parameters
    ----------
    data
        AnnData evaluated with :func:`hinge_sc.tl.evaluate` (read from ``uns[key + "_evaluation"]`` or
        ``uns[key]``), or a tidy per-gene table with columns ``method_key``, ``gene`` and ``metric``.
    table_key
        SpatialData input: the table with the spots (default: the one with ``obsm[key]``, or the only one).
    keys
        Prediction keys (AnnData) or methods (table) to show; default all.
    metric
        Per-gene column, e.g. ``"pearson"``, ``"spearman"``, ``"moran_generated"``.
    kind
        ``"rank"``, ``"ecdf"`` or ``"box"``.
    method_key
        Column naming the method.
    section
        Only this section (default: the mean over sections).
    top_k
        K of the PCC-K marker and legend.
    palette
        Colours, one per method.
    figsize
        Figure size in inches when ``ax`` is ``None``; default (5, 3.6).
    ax
        Axes to draw into.
    title
        Axes title; default the metric.
    save
        Path to write the figure to.
    show
        Show the figure; ``None``: when matplotlib is interactive and nothing is saved, like scanpy.
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot` (``"rank"``, ``"ecdf"``) or ``boxplot``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`.

    Raises
    ------
    KeyError
        If an evaluation, ``metric`` or ``section`` is missing.
    ValueError
        If ``kind`` is unknown.

    Examples
    --------
    >>> hs.pl.gene_scores(adata, ["hinge", "ridge"], kind="rank")
    """
    first = keys if isinstance(keys, str) else (keys[0] if keys else None)
    data = resolve_table(None, data, table_key, key=first)
    import matplotlib.pyplot as plt

    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}, found {kind!r}.")
    keys = [keys] if isinstance(keys, str) else keys
    table = _per_gene_table(data, keys, method_key)
    for col in (metric, "gene"):
        if col not in table.columns:
            raise KeyError(f"`metric={metric!r}`: column {col!r} is not in the per-gene table ({list(table.columns)}).")
    if section is not None:
        if "section" not in table.columns or section not in set(table["section"].astype(str)):
            raise KeyError(f"`section={section!r}` is not in the per-gene table; pass one of its sections or None.")
        table = table[table["section"].astype(str) == section]
    per_gene = table.groupby([method_key, "gene"], observed=True, sort=False)[metric].mean().reset_index()
    methods = list(dict.fromkeys(per_gene[method_key]))
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (5.0, 3.6), layout="constrained")
    colours = list(palette) if palette is not None else [f"C{i}" for i in range(len(methods))]
    values = {}
    for method in methods:
        v = per_gene.loc[per_gene[method_key] == method, metric].to_numpy(dtype=float)
        values[method] = np.sort(v[np.isfinite(v)])[::-1]
    for i, method in enumerate(methods):
        v, colour = values[method], colours[i % len(colours)]
        label = f"{method} (mean {v.mean():.2f}, top-{top_k} {v[:top_k].mean():.2f})" if v.size else f"{method} (n/a)"
        if kind == "rank":
            ax.plot(np.arange(1, v.size + 1), v, color=colour, label=label, **kwargs)
        elif kind == "ecdf":
            ax.plot(v[::-1], np.arange(1, v.size + 1) / max(v.size, 1), color=colour, label=label,
                    drawstyle="steps-post", **kwargs)  # fmt: skip
    if kind == "box":
        shown = [m for m in methods if values[m].size]  # a method without finite values (e.g. constant) has no box
        if shown:  # matplotlib refuses an empty box plot
            ax.boxplot([values[m] for m in shown], tick_labels=shown, **kwargs)
        if len(shown) > 3:
            ax.tick_params(axis="x", labelrotation=30)
        ax.set_ylabel(metric)
    elif kind == "rank":
        ax.axvline(top_k, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("gene rank")
        ax.set_ylabel(metric)
    else:
        ax.set_xlabel(metric)
        ax.set_ylabel("fraction of genes ≤ x")
    if kind != "box":
        ax.legend(fontsize="small", frameon=False)
    ax.set_title(title if title is not None else f"per-gene {metric}" + (f" ({section})" if section else ""))
    finish(ax.figure, save, show)
    return ax
