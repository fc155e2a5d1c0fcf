"""Calibration of generated samples: nominal against observed coverage of central intervals."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validators import check_prediction_frame
from ..pp._spatialdata import resolve_table
from ._utils import finish, section_mask

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def calibration(
    adata: AnnData | SpatialData,
    *,
    table_key: str | None = None,
    key: str | None = None,
    keys: Sequence[str] | None = None,
    layer: str | None = None,
    section: str | None = None,
    section_key: str | None = "section",
    scale: str | None = None,
    allow_non_integer: bool = False,
    levels: Sequence[float] = _LEVELS,
    palette: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Axes:
    """Calibration curve: nominal against observed coverage of central intervals, one line per prediction key.

    For each nominal level, the central interval of every spot and gene is the Student-t prediction interval of
    the stored samples (``obsm[key + "_samples"]``; exact for Gaussian draws whatever their number, unlike empirical
    quantiles, which are too narrow with few samples; see :func:`~hinge_sc.tl._uncertainty.central_interval`),
    and the observed coverage is the fraction of measured values inside it, on the evaluation scale of
    :func:`hinge_sc.tl.evaluate` (``scale``; the samples are transformed like the mean). A calibrated method
    lies on the diagonal; below it, the intervals are too narrow (over-confident). Spots with a NaN prediction
    or sample are left out. Genes: every prediction column that is measured.

    Parameters
    ----------
    adata
        AnnData with measured raw counts and the output of ``hs.tl.generate(..., save_samples=True)`` (or a
        baseline's ``predict(..., save_samples=True)``).
    table_key
        SpatialData input: the table with the spots (default: the one with ``obsm[key]``, or the only one).
    key
        Key of ``obsm`` with the predictions; default ``"hinge"`` when ``keys`` is not given either.
    keys
        Several prediction keys, one line each (instead of ``key``).
    layer
        Layer with raw counts; ``None`` uses ``X``.
    section
        Section to use, a value of ``obs[section_key]``; default the first of ``obs[section_key]``.
    section_key
        Column of ``obs`` with sections; ``None`` uses all spots.
    scale
        ``"log2p1"`` or ``"log1p_cp10k"``; default each key's own scale.
    allow_non_integer
        Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.
    levels
        Nominal coverages of the central intervals, each in (0, 1).
    palette
        Colours, one per key.
    figsize
        Figure size in inches when ``ax`` is ``None``; default (4, 4).
    ax
        Axes to draw into.
    title
        Axes title; default "calibration" and the section.
    show
        Call :func:`matplotlib.pyplot.show` after drawing (the Axes is returned either way); ``None``: when
        matplotlib is interactive and nothing is saved, like scanpy.
    save
        Path to write the figure to.
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot`.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`.

    Raises
    ------
    KeyError
        If ``obsm[key]`` or ``obsm[key + "_samples"]`` is missing (run ``hs.tl.generate(..., save_samples=True)``),
        or no prediction gene is measured.
    ValueError
        If both ``key`` and ``keys`` are given, ``section`` or ``scale`` is unknown, a level is outside (0, 1),
        the samples do not match the predictions, or the counts are not integer counts (unless
        ``allow_non_integer``).

    Examples
    --------
    >>> hs.tl.generate(adata, model, save_samples=True)
    >>> hs.pl.calibration(adata, key="hinge", section="C6", save="calibration.png")
    """
    adata = resolve_table(None, adata, table_key, key=key or (keys[0] if keys else "hinge"), argument="adata")
    import matplotlib.pyplot as plt

    if key is not None and keys is not None:
        raise ValueError("Pass `key=` for one prediction key or `keys=` for several, not both.")
    keys = ["hinge"] if key is None and keys is None else ([key] if key is not None else list(keys))
    if not keys:
        raise ValueError("`keys` is empty; pass at least one prediction key.")
    bad = [lv for lv in levels if not 0 < lv < 1]
    if bad or not len(levels):
        raise ValueError(f"`levels` must be nominal coverages in (0, 1), found {list(levels)}.")
    section, mask = section_mask(adata, section, section_key)
    curves = {k: _curve(adata, k, mask, layer=layer, scale=scale, levels=levels, allow_non_integer=allow_non_integer)
              for k in keys}  # fmt: skip
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (4.0, 4.0), layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="ideal")
    colours = list(palette) if palette is not None else [f"C{i}" for i in range(len(keys))]
    kwargs.setdefault("marker", "o")
    for i, (k, (curve, used_scale)) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        ax.plot(curve["level"], curve["coverage"], color=colour, label=f"{k} ({used_scale})", **kwargs)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage")
    ax.legend(fontsize="small", frameon=False)
    ax.set_title(title if title is not None else "calibration" + (f" ({section})" if section else ""))
    finish(ax.figure, save, show)
    return ax


def _curve(
    adata: AnnData,
    key: str,
    mask: np.ndarray,
    *,
    layer: str | None,
    scale: str | None,
    levels: Sequence[float],
    allow_non_integer: bool,
) -> tuple[Any, str]:
    """The calibration curve (DataFrame ``level``, ``coverage``) of ``key`` on the spots of ``mask``, and its scale."""
    from ..tl._evaluate import paired_values, resolve_scale
    from ..tl._uncertainty import calibration_curve

    pred = check_prediction_frame(adata, key, argument="key")
    if f"{key}_samples" not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{key + '_samples'!r}]` is missing: the calibration curve needs the samples. Run "
            f"`hs.tl.generate(..., key_added={key!r}, save_samples=True)` (or a baseline's `predict(..., "
            "save_samples=True)`)."
        )
    genes = [g for g in pred.columns if g in set(adata.var_names)]
    if not genes:
        raise KeyError(f"No gene of the predictions `adata.obsm[{key!r}]` is in `adata.var_names` (nothing measured).")
    used_scale, native = resolve_scale(adata, key, scale)
    measured, predicted, _, samples = paired_values(
        adata, key, genes, layer=layer, scale=used_scale, native=native, allow_non_integer=allow_non_integer
    )
    if samples is None:
        raise ValueError(
            f"`adata.obsm[{key + '_samples'!r}]` must be (n_spots, n_samples, n_genes) with {adata.n_obs} spots, "
            f"found shape {np.shape(adata.obsm[key + '_samples'])}. Run `hs.tl.generate(..., key_added={key!r}, "
            "save_samples=True, overwrite=True)` again."
        )
    ok = mask & np.isfinite(predicted).all(1) & np.isfinite(samples).all(axis=(1, 2))
    return calibration_curve(measured[ok], samples[ok], levels), used_scale
