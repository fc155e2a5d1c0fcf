"""Steps shared by the plots: the spots of one section, and writing a figure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def section_mask(adata: AnnData, section: str | None, section_key: str | None) -> tuple[str | None, np.ndarray]:
    """The section to show and the mask of its spots.

    Parameters
    ----------
    adata
        AnnData with the sections in ``obs[section_key]``.
    section
        A value of ``obs[section_key]``; ``None`` picks the first (category order). Without ``section_key``, every
        spot is shown and the default section is the only key of ``uns["spatial"]``, if there is one.
    section_key
        Column of ``obs`` with the section of each spot, or ``None``.

    Returns
    -------
    ``(section, mask)``: the section (``None`` when unknown) and a boolean mask over the spots, shape (n_spots,).

    Raises
    ------
    KeyError
        If ``section_key`` is not a column of ``obs``.
    ValueError
        If ``section`` is not in ``obs[section_key]``.
    """
    spatial = adata.uns.get("spatial", {})
    if section_key is None or section_key not in adata.obs:
        if section_key is not None:
            raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
        if section is None and len(spatial) == 1:
            section = next(iter(spatial))
        return section, np.ones(adata.n_obs, dtype=bool)
    col = adata.obs[section_key].astype(str)
    present = list(dict.fromkeys(col))
    if section is None:
        cats = adata.obs[section_key].cat.categories if hasattr(adata.obs[section_key], "cat") else present
        section = next(str(c) for c in cats if str(c) in present)
    elif section not in present:
        raise ValueError(f"`section={section!r}` is not in `adata.obs[{section_key!r}]`; choose from {present}.")
    return section, (col == section).to_numpy()


def save_figure(fig: Figure, save: str | os.PathLike | None) -> None:
    """Write ``fig`` to ``save`` (format from the suffix) when a path is given, and log it."""
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
        logger.info("Saved the figure to %s.", save)


class AxesList(list):
    """The Axes a multi-panel plot drew (a list), which also answers the figure's attributes for old code.

    Plots used to return their :class:`~matplotlib.figure.Figure`; ``result.savefig(...)`` and other figure
    attributes still work for one release, with a :class:`FutureWarning` (use ``result[0].figure``).
    """

    def __init__(self, axes: Sequence[Axes], legacy: Any = None):
        super().__init__(axes)
        self._legacy = legacy if legacy is not None else (axes[0].figure if len(axes) else None)

    @property
    def figure(self) -> Figure:
        """The figure of the Axes."""
        return self[0].figure

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self.__dict__.get("_legacy") is None:
            raise AttributeError(name)
        from .._deprecation import warn_renamed

        kind = type(self._legacy).__name__
        warn_renamed(f"<plot result>.{name}", f"<plot result>[0].figure.{name} (plots return their Axes)")
        logger.debug("forwarding %s to the %s", name, kind)
        return getattr(self._legacy, name)


def finish(fig: Figure, save: str | os.PathLike | None, show: bool | None) -> None:
    """Write ``fig`` when ``save`` is given; show it when ``show`` (``None``: only when not saved), like scanpy."""
    save_figure(fig, save)
    if show or (show is None and save is None and _interactive()):
        import matplotlib.pyplot as plt

        plt.show()


def _interactive() -> bool:
    import matplotlib

    return matplotlib.is_interactive()


def scale_label(scale: str | None) -> str:
    """The unit of a scale for colour bars: ``"log2(count+1)"`` for ``"log2p1"``; unknown scales as given."""
    from .._scales import SCALE_LABELS

    return SCALE_LABELS.get(scale or "log2p1", str(scale))


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 × 10^k) of about a fifth of ``span``."""
    if not np.isfinite(span) or span <= 0:
        return 1.0
    target = span / 5
    power = 10 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target) if target >= power else power)


def add_scalebar(ax: Axes, um_per_unit: float, *, length_um: float | None = None, color: str = "black") -> Any:
    """Draw a scale bar of ``length_um`` µm (default: a round fifth of the view) in the lower right of ``ax``.

    Parameters
    ----------
    ax
        Axes whose data units are pixels.
    um_per_unit
        µm per data unit (µm per drawn pixel).
    length_um
        Length of the bar in µm.
    color
        Colour of the bar and its label.

    Returns
    -------
    The :class:`~mpl_toolkits.axes_grid1.anchored_artists.AnchoredSizeBar` (in ``ax.artists``).
    """
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    length_um = length_um or nice_length(abs(x1 - x0) * um_per_unit)
    label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"
    bar = AnchoredSizeBar(
        ax.transData, length_um / um_per_unit, label, "lower right", pad=0.3, color=color, frameon=False,
        size_vertical=0, fontproperties={"size": "x-small"},
    )  # fmt: skip
    bar.scalebar_length_um = length_um
    ax.add_artist(bar)
    return bar
