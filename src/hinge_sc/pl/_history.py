"""Training curves of a trained model: :func:`training_history`.

HINGE's training loss and validation loss are not the same quantity (docs/method.md §6): the training loss is
drawn at steps ``t ≤ t_max`` of the warm-start curriculum (few hidden genes in the first epochs: an easier task), the
validation loss at uniform ``t ∈ {1..T}`` with fixed masks. They are drawn in two labelled panels, each comparable
across its own epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._utils import AxesList, finish

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

#: Panel titles of the two kinds of loss of a HINGE model.
TRAIN_TITLE = "training loss (t ≤ t_max: warm-up curriculum)"
VALIDATION_TITLE = "validation loss (uniform t, fixed masks)"


def _series(values: Any) -> pd.Series:
    """Per-epoch values as a numeric Series indexed by epoch."""
    if isinstance(values, pd.DataFrame):
        values = values.iloc[:, 0]
    index = values.index if isinstance(values, pd.Series) else None
    return pd.Series(pd.to_numeric(np.asarray(values).ravel(), errors="coerce"), index=index)


def _warmup_epochs(history: Mapping[str, Any]) -> np.ndarray:
    """Epochs whose ``t_max`` is below its final value (the warm-start curriculum), from the logged ``t_max``."""
    if "t_max" not in history:
        return np.array([])
    t_max = _series(history["t_max"]).dropna()
    return np.asarray(t_max.index[t_max < t_max.max()], dtype=float) if len(t_max) else np.array([])


def training_history(
    model: Any,
    *,
    metrics: Sequence[str] = ("train_loss", "validation_loss"),
    log_y: bool = False,
    figsize: tuple[float, float] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    show: bool | None = None,
    **kwargs: Any,
) -> list[Axes]:
    """Training curves (loss per epoch) of a trained model, training and validation in separate panels.

    Metrics whose name starts with ``"train"`` go in the left panel, titled "training loss (t ≤ t_max: warm-up
    curriculum)", with the warm-up epochs shaded (from the logged ``t_max``); the others in the right panel,
    "validation loss (uniform t, fixed masks)", with the best epoch marked. The two are on different t
    distributions, so their values are not compared with each other. With a single Axes as ``ax`` (or metrics of one
    kind) everything is drawn in one panel, its curves labelled by the same descriptions.

    Parameters
    ----------
    model
        A trained :class:`~hinge_sc.HINGE` (reads ``model.history``), or a mapping of metric name → per-epoch
        values (DataFrame, Series or sequence).
    metrics
        Metrics to draw; ones the history does not hold are skipped (at least one must be present).
    log_y
        Logarithmic y axes.
    figsize
        Figure size in inches when ``ax`` is ``None``; default (8, 3.2) for two panels, (4.5, 3.2) for one.
    ax
        One Axes (all curves in it) or two (training, validation).
    title
        Figure title (the Axes title with one panel); default the best epoch, if known.
    save
        Path to write the figure to.
    show
        Show the figure; ``None``: when matplotlib is interactive and nothing is saved, like scanpy.
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot`.

    Returns
    -------
    The list of Axes drawn (one or two); ``result[0].figure`` is the figure.

    Raises
    ------
    ValueError
        If the model has no history (train it first), none of ``metrics`` is in it, or ``ax`` is not one or two Axes.

    Examples
    --------
    >>> model.train(max_epochs=10)
    >>> hs.pl.training_history(model, save="history.png")
    """
    history = model if isinstance(model, Mapping) else getattr(model, "history", None)
    if not history:
        raise ValueError("`model` has no training history; train it first (`model.train()`), or pass a mapping.")
    present = [m for m in metrics if m in history]
    if not present:
        raise ValueError(f"None of `metrics={list(metrics)}` is in the history (it has {sorted(history)}).")
    by_kind = ([m for m in present if m.startswith("train")], [m for m in present if not m.startswith("train")])
    groups = [g for g in by_kind if g]
    axes = _axes(ax, len(groups), figsize)
    if len(axes) == 1:
        groups = [present]
    best = getattr(model, "train_params_", {}).get("best_epoch") if not isinstance(model, Mapping) else None
    hinge = "t_max" in history or best is not None  # the curves of a HINGE model: state their t distributions
    warmup = _warmup_epochs(history)
    for a, names in zip(axes, groups, strict=True):
        for name in names:
            series = _series(history[name])
            label = name
            if len(axes) == 1 and hinge and name in ("train_loss", "validation_loss"):
                label = TRAIN_TITLE if name == "train_loss" else VALIDATION_TITLE
            a.plot(np.asarray(series.index, dtype=float), series.to_numpy(), marker=".", label=label, **kwargs)
        is_train = all(n.startswith("train") for n in names)
        if warmup.size and (is_train or len(axes) == 1):
            a.axvspan(warmup.min() - 0.5, warmup.max() + 0.5, color="0.9", zorder=0, label="warm-up epochs")
        if best is not None and (not is_train or len(axes) == 1):
            a.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch ({best})")
        if log_y:
            a.set_yscale("log")
        a.set_xlabel("epoch")
        a.set_ylabel("loss")
        a.legend(fontsize="small", frameon=False)
        if len(axes) == 2 and hinge:
            a.set_title(TRAIN_TITLE if is_train else VALIDATION_TITLE, fontsize="medium")
    default = "training" + (f" (best epoch {best})" if best is not None else "")
    if len(axes) == 1:
        axes[0].set_title(title if title is not None else default)
    else:
        axes[0].figure.suptitle(title if title is not None else default)
    finish(axes[0].figure, save, show)
    return AxesList(axes, legacy=axes[0])


def _axes(ax: Axes | Sequence[Axes] | None, n_panels: int, figsize: tuple[float, float] | None) -> list[Axes]:
    """The Axes to draw into: ``ax`` (one or two), or a new figure with ``n_panels`` side by side."""
    import matplotlib.pyplot as plt

    if ax is None:
        size = figsize or ((8.0, 3.2) if n_panels == 2 else (4.5, 3.2))
        _, axes = plt.subplots(1, n_panels, figsize=size, layout="constrained", squeeze=False)
        return list(axes.ravel())
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) not in (1, 2) or (len(axes) == 2 and n_panels == 1):
        raise ValueError(f"`ax` must be one Axes or two (training, validation), found {len(axes)}; or pass `ax=None`.")
    return axes
